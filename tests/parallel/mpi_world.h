// tests/parallel/mpi_world.h -- the world communicator the multi-rank tests share.
// Set up by mpi_main.cpp before any test runs.
#pragma once

#include "parallel/comm.h"

namespace lmforge::testing {
parallel::Comm& world();
}
