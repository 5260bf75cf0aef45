// experiments/report.cpp -- the HTML report: SVG charts drawn by hand (a few lines and labels),
// tables, and PNG rasters of the same charts through libpng's simplified API.
#include "experiments/report.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/files.h"
#include "core/run_dir.h"
#include "experiments/run_record.h"
#include "experiments/runs.h"
#include "core/errors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace lmforge::experiments {

namespace {

// Chart geometry (px): room on the left for y labels, below for x labels.
constexpr int kWidth = 640, kHeight = 300, kLeft = 64, kRight = 16, kTop = 28, kBottom = 36;
// Distinct colours for overlaid runs (Tableau 10).
const char* const kColours[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string format(double v, const char* fmt = "%.4g") {
  char buf[32];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

struct Bounds {
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  double px(double x) const { return kLeft + (x - x0) / (x1 - x0) * (kWidth - kLeft - kRight); }
  double py(double y) const { return kTop + (y1 - y) / (y1 - y0) * (kHeight - kTop - kBottom); }
};

Bounds bounds_of(const std::vector<Series>& series) {
  Bounds b{1e300, -1e300, 1e300, -1e300};
  for (const auto& s : series)
    for (const auto& [x, y] : s.points) {
      b.x0 = std::min(b.x0, x), b.x1 = std::max(b.x1, x), b.y0 = std::min(b.y0, y), b.y1 = std::max(b.y1, y);
    }
  if (b.x0 > b.x1) return Bounds{};
  if (b.x1 == b.x0) b.x1 = b.x0 + 1;
  double pad = b.y1 > b.y0 ? 0.05 * (b.y1 - b.y0) : std::max(1e-12, std::abs(b.y0) * 0.05 + 1e-12);
  b.y0 -= pad, b.y1 += pad;
  return b;
}

struct Run {
  std::string dir;
  json meta;
  std::string config;
  std::vector<json> rows;
  std::string label() const { return meta.value("name", std::string("run")) + " " + meta.value("run_id", dir); }
};

Run read_run(const std::string& dir) {
  Run r;
  r.dir = dir;
  r.meta = json::parse(read_file_or_empty(RunDir{dir}.meta()), nullptr, false);
  if (r.meta.is_discarded() || !r.meta.is_object()) throw InputError(dir + "/meta.json is missing or not JSON");
  r.config = read_file_or_empty(RunDir{dir}.config());
  std::ifstream in(RunDir{dir}.metrics());
  std::string line;
  while (std::getline(in, line)) {
    json row = json::parse(line, nullptr, false);
    if (!row.is_discarded() && row.is_object() && row.contains("step")) r.rows.push_back(std::move(row));
  }
  return r;
}

std::vector<Series> curve(const std::vector<Run>& runs, const std::string& key) {
  std::vector<Series> out;
  for (const auto& run : runs) {
    Series s{run.label(), {}};
    for (const auto& row : run.rows)
      if (row.contains(key) && row[key].is_number() && std::isfinite(row[key].get<double>()))
        s.points.emplace_back(row["step"].get<double>(), row[key].get<double>());
    out.push_back(std::move(s));
  }
  return out;
}

bool has_points(const std::vector<Series>& series) {
  return std::any_of(series.begin(), series.end(), [](const Series& s) { return !s.points.empty(); });
}

// ----- PNG ----------------------------------------------------------------------------------

struct Raster {
  std::vector<unsigned char> rgb = std::vector<unsigned char>(kWidth * kHeight * 3, 255);
  void dot(int x, int y, unsigned colour) {
    if (x < 0 || y < 0 || x >= kWidth || y >= kHeight) return;
    unsigned char* p = &rgb[(static_cast<size_t>(y) * kWidth + x) * 3];
    p[0] = (colour >> 16) & 0xff, p[1] = (colour >> 8) & 0xff, p[2] = colour & 0xff;
  }
  void line(double x0, double y0, double x1, double y1, unsigned colour, int thickness = 1) {
    int steps = static_cast<int>(std::max(std::abs(x1 - x0), std::abs(y1 - y0))) + 1;
    for (int i = 0; i <= steps; ++i) {
      double t = static_cast<double>(i) / steps;
      int x = static_cast<int>(std::lround(x0 + t * (x1 - x0))), y = static_cast<int>(std::lround(y0 + t * (y1 - y0)));
      for (int dx = 0; dx < thickness; ++dx)
        for (int dy = 0; dy < thickness; ++dy) dot(x + dx, y + dy, colour);
    }
  }
};

void write_png(const std::string& path, const std::vector<Series>& series) {
  Raster r;
  Bounds b = bounds_of(series);
  for (int k = 0; k <= 4; ++k) {  // grid lines where the SVG has its ticks
    double y = kTop + k * (kHeight - kTop - kBottom) / 4.0;
    r.line(kLeft, y, kWidth - kRight, y, 0xe0e0e0);
  }
  r.line(kLeft, kTop, kLeft, kHeight - kBottom, 0x333333);
  r.line(kLeft, kHeight - kBottom, kWidth - kRight, kHeight - kBottom, 0x333333);
  for (size_t i = 0; i < series.size(); ++i) {
    unsigned colour = static_cast<unsigned>(std::stoul(kColours[i % 10] + 1, nullptr, 16));
    const auto& p = series[i].points;
    for (size_t k = 1; k < p.size(); ++k)
      r.line(b.px(p[k - 1].first), b.py(p[k - 1].second), b.px(p[k].first), b.py(p[k].second), colour, 2);
    if (p.size() == 1) r.line(b.px(p[0].first) - 2, b.py(p[0].second), b.px(p[0].first) + 2, b.py(p[0].second), colour, 3);
  }
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = kWidth;
  image.height = kHeight;
  image.format = PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&image, path.c_str(), 0, r.rgb.data(), kWidth * 3, nullptr))
    throw InputError("cannot write " + path + ": " + image.message);
}

// ----- HTML ---------------------------------------------------------------------------------

// Metric name -> value per run, from the last eval rows (held-out loss and every suite metric).
std::string eval_table(const std::vector<Run>& runs) {
  std::vector<std::map<std::string, double>> values;
  std::vector<std::string> keys;
  for (const auto& run : runs) {
    values.push_back(last_eval_metrics(run.dir));
    for (const auto& [k, v] : values.back())
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  }
  std::sort(keys.begin(), keys.end());
  if (keys.empty()) return "<p>No evaluations recorded.</p>\n";
  std::ostringstream out;
  out << "<table><tr><th>metric</th>";
  for (const auto& run : runs) out << "<th>" << escape(run.label()) << "</th>";
  if (runs.size() == 2) out << "<th>change</th>";
  out << "</tr>\n";
  for (const auto& k : keys) {
    out << "<tr><td>" << escape(k) << "</td>";
    for (const auto& v : values) out << "<td>" << (v.count(k) ? format(v.at(k), "%.4f") : "-") << "</td>";
    if (runs.size() == 2)
      out << "<td>" << (values[0].count(k) && values[1].count(k) ? format(values[1].at(k) - values[0].at(k), "%+.4f") : "-")
          << "</td>";
    out << "</tr>\n";
  }
  out << "</table>\n";
  return out.str();
}

std::string lineage(const Run& run) {
  const json& m = run.meta;
  std::ostringstream out;
  auto item = [&](const std::string& what, const json& v) {
    if (v.is_null()) return;
    out << "<tr><td>" << escape(what) << "</td><td>" << escape(v.is_string() ? v.get<std::string>() : v.dump())
        << "</td></tr>\n";
  };
  out << "<table>\n";
  item("run", m.value("run_id", json()));
  item("status", m.value("status", json()));
  item("config sha256", m.value("config_sha256", json()));
  item("code", m.contains("code") ? m["code"] : json());
  item("datasets", m.contains("datasets") ? m["datasets"] : json());
  item("parent checkpoint", m.value("parent_checkpoint", json()));
  item("world", m.contains("world") ? m["world"] : json());
  out << "</table>\n";
  return out.str();
}

}  // namespace

const std::vector<std::string>& report_curves() {
  static const std::vector<std::string> curves = {"loss", "eval_loss", "lr", "grad_norm", "tokens_per_s"};
  return curves;
}

std::string svg_chart(const std::string& title, const std::vector<Series>& series) {
  Bounds b = bounds_of(series);
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" viewBox=\"0 0 " << kWidth << " " << kHeight << "\" role=\"img\" aria-label=\"" << escape(title) << "\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kWidth / 2 << "\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">" << escape(title) << "</text>\n";
  for (int k = 0; k <= 4; ++k) {  // y ticks and grid
    double y = b.y0 + (b.y1 - b.y0) * k / 4.0;
    svg << "<line class=\"grid\" x1=\"" << kLeft << "\" x2=\"" << kWidth - kRight << "\" y1=\"" << b.py(y) << "\" y2=\""
        << b.py(y) << "\" stroke=\"#e0e0e0\"/>\n"
        << "<text x=\"" << kLeft - 4 << "\" y=\"" << b.py(y) + 4 << "\" text-anchor=\"end\" font-size=\"11\">"
        << format(y) << "</text>\n";
    double x = b.x0 + (b.x1 - b.x0) * k / 4.0;
    svg << "<text x=\"" << b.px(x) << "\" y=\"" << kHeight - kBottom + 16 << "\" text-anchor=\"middle\" font-size=\"11\">"
        << format(x, "%.0f") << "</text>\n";
  }
  svg << "<text x=\"" << (kLeft + kWidth - kRight) / 2 << "\" y=\"" << kHeight - 4
      << "\" text-anchor=\"middle\" font-size=\"11\">step</text>\n"
      << "<path class=\"axes\" d=\"M" << kLeft << " " << kTop << "V" << kHeight - kBottom << "H" << kWidth - kRight
      << "\" fill=\"none\" stroke=\"#333\"/>\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const char* colour = kColours[i % 10];
    if (series[i].points.size() == 1) {
      svg << "<circle class=\"series\" cx=\"" << b.px(series[i].points[0].first) << "\" cy=\""
          << b.py(series[i].points[0].second) << "\" r=\"3\" fill=\"" << colour << "\"/>\n";
    } else if (!series[i].points.empty()) {
      svg << "<polyline class=\"series\" fill=\"none\" stroke-width=\"2\" stroke=\"" << colour << "\" points=\"";
      for (const auto& [x, y] : series[i].points) svg << format(b.px(x), "%.1f") << "," << format(b.py(y), "%.1f") << " ";
      svg << "\"/>\n";
    }
    svg << "<rect x=\"" << kLeft + 8 << "\" y=\"" << kTop + 4 + 14 * i << "\" width=\"10\" height=\"10\" fill=\"" << colour
        << "\"/><text x=\"" << kLeft + 22 << "\" y=\"" << kTop + 13 + 14 * i << "\" font-size=\"11\">"
        << escape(series[i].label) << "</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

std::vector<std::string> write_report(const std::vector<std::string>& run_dirs, const std::string& out_html, bool png) {
  std::vector<Run> runs;
  for (const auto& dir : run_dirs) runs.push_back(read_run(dir));
  std::vector<std::string> written;
  if (!fs::path(out_html).parent_path().empty()) fs::create_directories(fs::path(out_html).parent_path());
  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>lmforge report</title>\n"
       << "<style>body{font-family:sans-serif;margin:24px;max-width:1340px}"
          "figure{display:inline-block;margin:8px;border:1px solid #ddd}"
          "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
          "pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:480px}</style>\n</head><body>\n"
       << "<h1>lmforge report</h1>\n<p>";
  for (const auto& run : runs) html << escape(run.label()) << " (" << escape(run.dir) << ")<br>\n";
  html << "</p>\n<h2>Curves</h2>\n";
  fs::path stem = fs::path(out_html).replace_extension();
  for (const auto& key : report_curves()) {
    std::vector<Series> series = curve(runs, key);
    if (!has_points(series)) continue;
    html << "<figure id=\"curve-" << key << "\">\n" << svg_chart(key, series) << "</figure>\n";
    if (png) {
      std::string path = stem.string() + "_" + key + ".png";
      write_png(path, series);
      written.push_back(path);
    }
  }
  html << "<h2>Evaluation</h2>\n" << eval_table(runs);
  for (const auto& run : runs) {
    html << "<h2>" << escape(run.label()) << "</h2>\n<h3>Lineage</h3>\n" << lineage(run)
         << "<h3>Resolved config</h3>\n<pre>" << escape(run.config) << "</pre>\n"
         << "<h3>Meta</h3>\n<pre>" << escape(run.meta.dump(2)) << "</pre>\n";
  }
  html << "</body></html>\n";
  write_file_atomic(out_html, html.str());
  written.insert(written.begin(), out_html);
  return written;
}

}  // namespace lmforge::experiments
