// experiments/report.h -- `lmforge report`: one self-contained HTML page (inline SVG, inline CSS,
// no scripts, nothing fetched) of one or more runs, and optional PNG files of its curves (libpng).
// Reads run directories only; what a run records is run_record.h's business.
#pragma once

#include <string>
#include <vector>

namespace lmforge::experiments {

// The curves a report draws, in order: metrics.jsonl keys plotted against "step".
const std::vector<std::string>& report_curves();

// An SVG line chart of `series` (one polyline per run, coloured, with a legend); `title` on top.
struct Series {
  std::string label;
  std::vector<std::pair<double, double>> points;  // (step, value)
};
std::string svg_chart(const std::string& title, const std::vector<Series>& series);

// Writes the HTML report of `run_dirs` (curves overlaid, eval table, resolved config, lineage, meta)
// to `out_html`, and with `png` one <out_html stem>_<curve>.png per curve. Returns the files written.
// Throws InputError naming a run directory that cannot be read.
std::vector<std::string> write_report(const std::vector<std::string>& run_dirs, const std::string& out_html, bool png);

}  // namespace lmforge::experiments
