// core/pch.h -- the precompiled header: heavy third-party headers only.
// Nothing of lmforge's own lives here, so touching a project header never rebuilds the PCH.
#pragma once
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>
