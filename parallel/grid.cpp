// parallel/grid.cpp -- checking the dp x tp layout and splitting the world into its axes.
// No tensor math here: that is tensor_parallel.cpp's.
#include "parallel/grid.h"

#include "core/errors.h"

namespace lmforge::parallel {

void check_grid_layout(int64_t world, int64_t dp, int64_t tp) {
  const std::string ranks = std::to_string(world) + " ranks were started";
  if (tp < 1 || world % tp != 0)
    throw InputError("parallel.tp is " + std::to_string(tp) + " but " + ranks +
                     ": the world size must be a multiple of tp (dp x tp ranks)");
  if (dp == 0 || dp * tp == world) return;
  if (tp == 1) throw InputError("parallel.dp is " + std::to_string(dp) + " but " + ranks + "; set parallel.dp: auto or start that many");
  throw InputError("parallel.dp x parallel.tp is " + std::to_string(dp) + " x " + std::to_string(tp) + " = " +
                   std::to_string(dp * tp) + " but " + ranks + "; set parallel.dp: auto or start that many");
}

Grid::Grid(Comm& world, int64_t dp, int64_t tp) : world_(world), tp_size_(static_cast<int>(tp)) {
  check_grid_layout(world.size(), dp, tp);
  if (tp == 1) {
    tp_ = make_self_comm();
    return;
  }
  const int rank = world.rank(), tp_rank = rank % tp_size_, dp_rank = rank / tp_size_;
  tp_ = world.split(dp_rank, tp_rank);
  dp_ = world.split(tp_rank, dp_rank);
}

}  // namespace lmforge::parallel
