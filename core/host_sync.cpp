// core/host_sync.cpp -- the counted device-to-host read of host_sync.h.
// The count is process-wide and atomic; what is read and when is the caller's.
#include "core/host_sync.h"

#include <atomic>

namespace lmforge {

namespace {
std::atomic<int64_t> g_reads{0};
}

torch::Tensor read_to_host(const torch::Tensor& t) {
  g_reads.fetch_add(1);
  return t.cpu();
}

int64_t host_reads() { return g_reads.load(); }

}  // namespace lmforge
