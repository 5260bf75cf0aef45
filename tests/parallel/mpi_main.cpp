// tests/parallel/mpi_main.cpp -- GoogleTest main for tests run under mpirun: initialises MPI,
// prints from rank 0 (other ranks print only their failures), fails if any rank failed.
#include <gtest/gtest.h>

#include "tests/parallel/mpi_world.h"

namespace {
std::unique_ptr<lmforge::parallel::Comm> g_world;

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: %s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                   r.message());
  }

 private:
  int rank_;
};
}  // namespace

namespace lmforge::testing {
parallel::Comm& world() { return *g_world; }
}  // namespace lmforge::testing

int main(int argc, char** argv) {
  g_world = lmforge::parallel::make_mpi_world_comm();
  ::testing::InitGoogleTest(&argc, argv);
  torch::set_num_threads(1);  // several ranks share 2 cores
  if (g_world->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(g_world->rank()));
  }
  int rc = RUN_ALL_TESTS();
  auto any_failed = torch::tensor({rc}, torch::kInt);
  g_world->allreduce(any_failed, lmforge::parallel::ReduceOp::max);
  int result = any_failed.item<int>();
  g_world.reset();
  return result;
}
