// core/run_dir.h -- the names of a run directory's files, in one place. What goes into them is
// experiments/run_record.h's (config, meta, metrics), trainer/'s (checkpoints, weights, exports).
#pragma once

#include <string>

namespace lmforge {

// runs/<run.name>/<run_id>/: every path below is under `root`.
struct RunDir {
  std::string root;

  std::string config() const { return root + "/config.yaml"; }          // the resolved config
  std::string meta() const { return root + "/meta.json"; }              // ids, status, lineage, layout
  std::string metrics() const { return root + "/metrics.jsonl"; }       // one row per logged step/eval
  std::string lock() const { return root + "/.lock"; }                  // held while the run is alive
  std::string checkpoints() const { return root + "/checkpoints"; }     // step_N/ and `latest`
  std::string final_weights() const { return root + "/model.safetensors"; }  // lmforge names
  std::string base() const { return root + "/base"; }                   // a LoRA run's saved random base
  std::string base_reference() const { return root + "/base.json"; }    // a LoRA run's frozen base
  std::string export_dir() const { return root + "/export"; }           // the HF directory (+ README.md)
  std::string adapter_dir() const { return export_dir() + "/adapter"; } // a LoRA run's PEFT adapter
  std::string eval_dir() const { return root + "/eval"; }               // eval suites' results
  std::string tensorboard() const { return root + "/tensorboard"; }     // event files
  std::string rank_log(int rank) const { return root + "/logs/rank_" + std::to_string(rank) + ".log"; }
};

}  // namespace lmforge
