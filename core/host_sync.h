// core/host_sync.h -- the one door through which the training step reads device values on the
// host, counted, so a test can hold the step to its budget (one read per step). Not for I/O paths.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace lmforge {

// `t` on the CPU: a device-to-host copy (a synchronisation) when t lives on a device. Counted.
torch::Tensor read_to_host(const torch::Tensor& t);
// Reads made through read_to_host so far in this process.
int64_t host_reads();

}  // namespace lmforge
