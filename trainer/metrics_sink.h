// trainer/metrics_sink.h -- where the trainer's metric rows go: a small interface the run record
// (experiments/run_record.h) implements, so the trainer never includes experiments/.
#pragma once

#include <nlohmann/json_fwd.hpp>

namespace lmforge::trainer {

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  virtual void append_metrics(const nlohmann::json& row) = 0;  // one row: a step's or an evaluation's
};

}  // namespace lmforge::trainer
