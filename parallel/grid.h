// parallel/grid.h -- the dp x tp process grid (tp ranks adjacent, one sub-communicator per axis)
// and the layout rules a config must meet. The tensor-parallel layers live in tensor_parallel.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "parallel/comm.h"

namespace lmforge::parallel {

// world = dp x tp, rank = dp_rank * tp + tp_rank: the ranks of one tp group are adjacent, so a
// launcher that fills nodes in rank order keeps each tp group (which talks every layer) on one
// node. The ranks of a tp group see the same batch; the ranks of a dp group hold the same shard.
// `world` must outlive the grid, and the grid every layer parallelize() built on it.
// Throws InputError, naming the keys and numbers, unless `world` ranks make a dp x tp grid
// (dp = 0: auto, world / tp). Cheap: call it before start-up.
void check_grid_layout(int64_t world, int64_t dp, int64_t tp);

class Grid {
 public:
  // Checks the layout (check_grid_layout), then splits `world`; collective.
  Grid(Comm& world, int64_t dp, int64_t tp);
  Comm& world() { return world_; }
  Comm& dp() { return dp_ ? *dp_ : world_; }  // same tp rank, every dp rank: gradient sync, data
  Comm& tp() { return *tp_; }                 // same dp rank, every tp rank: the layers' collectives
  int dp_size() const { return world_.size() / tp_size_; }
  int tp_size() const { return tp_size_; }

 private:
  Comm& world_;
  int tp_size_;
  std::unique_ptr<Comm> dp_;  // null when tp = 1: the world is the dp axis
  std::unique_ptr<Comm> tp_;
};

}  // namespace lmforge::parallel
