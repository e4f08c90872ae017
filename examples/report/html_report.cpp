// The HTML page of a pruning run (see html_report.hpp).
#include "report/html_report.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <unistd.h>

namespace report {
namespace {

[[noreturn]] void fail(const std::string& field, const std::string& problem) {
  throw std::invalid_argument("report: " + field + ": " + problem);
}

std::string number(double value, int digits) {
  std::array<char, 64> text{};
  std::snprintf(text.data(), text.size(), "%.*f", digits, value);
  return text.data();
}

/// Significant digits without an exponent for the values a report holds.
std::string short_number(double value) {
  std::array<char, 64> text{};
  std::snprintf(text.data(), text.size(), "%.4g", value);
  return text.data();
}

/// 1185376 -> "1 185 376" (a thin space between groups of three digits).
std::string grouped(std::int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += "&#8201;";
    out += digits[i];
  }
  return value < 0 ? "&#8722;" + out : out;
}

std::string field_at(const std::string& array, std::size_t index) { return array + "[" + std::to_string(index) + "]"; }

void require_finite(double value, const std::string& field) {
  if (!std::isfinite(value)) fail(field, std::string(std::isnan(value) ? "NaN" : "an infinity") + " is not a finite number");
}

void validate(const prune_report& r) {
  for (std::size_t l = 0; l < r.layers.size(); ++l) {
    const auto& layer = r.layers[l];
    const auto where = field_at("layers", l);
    const auto n = layer.heads.size();
    if (n > 0 && (layer.kv_heads <= 0 || n % static_cast<std::size_t>(layer.kv_heads) != 0)) {
      fail(where + ".kv_heads", std::to_string(layer.kv_heads) + " does not divide the layer's " + std::to_string(n) + " heads into equal groups");
    }
    for (std::size_t h = 0; h < n; ++h) {
      const auto& head = layer.heads[h];
      const auto at = where + "." + field_at("heads", h);
      if (head.score) require_finite(*head.score, at + ".score");
      if (head.participation) {
        require_finite(*head.participation, at + ".participation");
        if (*head.participation < 0 || *head.participation > 1) fail(at + ".participation", short_number(*head.participation) + " lies outside [0, 1]");
      }
    }
    if (!layer.redundancy.empty() && layer.redundancy.size() != n * n) {
      fail(where + ".redundancy", "has " + std::to_string(layer.redundancy.size()) + " values, expected " + std::to_string(n * n) + " (heads squared)");
    }
    for (std::size_t k = 0; k < layer.redundancy.size(); ++k) {
      const auto at = where + "." + field_at("redundancy", k);
      require_finite(layer.redundancy[k], at);
      // A cosine computed in floating point may exceed 1 by rounding.
      if (std::abs(layer.redundancy[k]) > 1 + 1e-6) fail(at, short_number(layer.redundancy[k]) + " lies outside [-1, 1]");
    }
  }
  if (r.perplexity) {
    for (const auto& [value, name] : {std::pair{r.perplexity->before, "perplexity.before"}, std::pair{r.perplexity->after, "perplexity.after"}}) {
      require_finite(value, name);
      if (!(value > 0)) fail(name, short_number(value) + " is not a perplexity (> 0)");
    }
  }
}

// Colours: a sequential scale for scores (ColorBrewer "Blues"), a diverging one
// for redundancy (ColorBrewer "RdBu": -1 blue, 0 white, +1 red); the reds of
// "removed" (frames #e41a1c, marks and labels #cb181d, in the style sheet) are
// on neither scale.
struct rgb {
  double r, g, b;
};
constexpr std::array<rgb, 5> score_scale{{{239, 243, 255}, {189, 215, 231}, {107, 174, 214}, {49, 130, 189}, {8, 81, 156}}};
constexpr std::array<rgb, 5> redundancy_scale{{{33, 102, 172}, {146, 197, 222}, {247, 247, 247}, {244, 165, 130}, {178, 24, 43}}};
constexpr const char* unscored_colour = "#d9d9d9";

template <std::size_t N>
std::string colour(const std::array<rgb, N>& scale, double t) {
  t = std::clamp(t, 0.0, 1.0) * static_cast<double>(N - 1);
  const auto i = std::min(static_cast<std::size_t>(t), N - 2);
  const double f = t - static_cast<double>(i);
  const auto mix = [&](double a, double b) { return static_cast<int>(std::lround(a + (b - a) * f)); };
  std::array<char, 8> text{};
  std::snprintf(text.data(), text.size(), "#%02x%02x%02x", mix(scale[i].r, scale[i + 1].r), mix(scale[i].g, scale[i + 1].g),
                mix(scale[i].b, scale[i + 1].b));
  return text.data();
}

template <std::size_t N>
std::string gradient(const std::array<rgb, N>& scale, const std::string& id) {
  std::string out = "<defs><linearGradient id=\"" + id + "\">";
  for (std::size_t i = 0; i < N; ++i) {
    out += "<stop offset=\"" + number(static_cast<double>(i) / static_cast<double>(N - 1), 2) + "\" stop-color=\"" +
           colour(scale, static_cast<double>(i) / static_cast<double>(N - 1)) + "\"/>";
  }
  return out + "</linearGradient></defs>";
}

std::string text_at(double x, double y, const std::string& escaped, const char* extra = "") {
  return "<text x=\"" + number(x, 1) + "\" y=\"" + number(y, 1) + "\"" + extra + ">" + escaped + "</text>";
}

std::string rect(std::int64_t x, std::int64_t y, std::int64_t w, std::int64_t h, const std::string& attributes, const std::string& title = {}) {
  std::string out = "<rect x=\"" + std::to_string(x) + "\" y=\"" + std::to_string(y) + "\" width=\"" + std::to_string(w) + "\" height=\"" +
                    std::to_string(h) + "\" " + attributes;
  return title.empty() ? out + "/>" : out + "><title>" + title + "</title></rect>";
}

struct score_range {
  double low = 0, high = 0;
  bool any = false;
  [[nodiscard]] double position(double s) const { return high > low ? (s - low) / (high - low) : 1.0; }
};

score_range scores_of(const prune_report& r) {
  score_range range;
  for (const auto& layer : r.layers) {
    for (const auto& head : layer.heads) {
      if (!head.score) continue;
      range.low = range.any ? std::min(range.low, *head.score) : *head.score;
      range.high = range.any ? std::max(range.high, *head.score) : *head.score;
      range.any = true;
    }
  }
  return range;
}

std::string head_title(std::size_t layer, std::size_t head, const head_cell& cell, bool layer_removed) {
  std::string t = "layer " + std::to_string(layer) + ", head " + std::to_string(head) + ": ";
  t += layer_removed ? "removed with its layer" : cell.removed ? "removed" : "kept";
  if (cell.score) t += "; score " + short_number(*cell.score);
  if (cell.participation) t += "; participation " + number(*cell.participation, 3);
  return t;
}

// The layers × heads grid: colour = score, a red frame = removed.
std::string heads_grid(const prune_report& r, const score_range& range) {
  std::size_t widest = 1;
  for (const auto& layer : r.layers) widest = std::max(widest, layer.heads.size());
  const std::int64_t cell = std::clamp<std::int64_t>(640 / static_cast<std::int64_t>(widest), 10, 28);
  const std::int64_t left = 78;
  const std::int64_t top = 22;
  const std::int64_t width = left + cell * static_cast<std::int64_t>(widest) + 150;
  const std::int64_t height = top + cell * static_cast<std::int64_t>(r.layers.size()) + 8;
  const std::size_t label_every = cell >= 16 ? 1 : cell >= 12 ? 4 : 8;
  std::ostringstream s;
  s << "<svg class=\"grid\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height << "\" viewBox=\"0 0 " << width
    << ' ' << height << "\" role=\"img\" aria-label=\"heads of every layer, coloured by score, removed heads framed in red\">";
  for (std::size_t h = 0; h < widest; h += label_every) {
    s << text_at(static_cast<double>(left) + (static_cast<double>(h) + 0.5) * static_cast<double>(cell), top - 7, std::to_string(h),
                 " text-anchor=\"middle\" class=\"axis\"");
  }
  for (std::size_t l = 0; l < r.layers.size(); ++l) {
    const auto& layer = r.layers[l];
    const std::int64_t y = top + cell * static_cast<std::int64_t>(l);
    s << text_at(left - 8, static_cast<double>(y) + static_cast<double>(cell) * 0.5 + 4, "layer " + std::to_string(l),
                 layer.removed ? " text-anchor=\"end\" class=\"axis gone\"" : " text-anchor=\"end\" class=\"axis\"");
    const auto n = layer.heads.size();
    for (std::size_t h = 0; h < n; ++h) {
      const auto& head = layer.heads[h];
      const std::int64_t x = left + cell * static_cast<std::int64_t>(h);
      const auto fill = head.score ? colour(score_scale, range.position(*head.score)) : std::string(unscored_colour);
      s << rect(x, y, cell - 1, cell - 1, "fill=\"" + fill + "\"", html_escape(head_title(l, h, head, layer.removed)));
      // A 2-pixel frame just inside the cell: its edges on whole pixels, so it is
      // drawn in exactly the frame colour (tests/report/browser_check.sh counts it).
      if (head.removed || layer.removed) s << rect(x + 1, y + 1, cell - 3, cell - 3, "class=\"removed\" fill=\"none\" stroke-width=\"2\"");
    }
    // GQA groups: a dark line between groups of kv_heads.
    if (layer.kv_heads > 1) {
      const auto group = n / static_cast<std::size_t>(layer.kv_heads);
      for (std::size_t g = 1; g < static_cast<std::size_t>(layer.kv_heads); ++g) {
        const auto x = static_cast<double>(left + cell * static_cast<std::int64_t>(g * group)) - 0.5;
        s << "<line x1=\"" << number(x, 1) << "\" y1=\"" << y << "\" x2=\"" << number(x, 1) << "\" y2=\"" << y + cell - 1
          << "\" class=\"group\"/>";
      }
    }
    const auto gone = std::count_if(layer.heads.begin(), layer.heads.end(), [&](const head_cell& c) { return c.removed || layer.removed; });
    const std::string note = layer.removed ? "layer removed" : std::to_string(gone) + " of " + std::to_string(n) + " removed";
    s << text_at(static_cast<double>(left + cell * static_cast<std::int64_t>(widest) + 8), static_cast<double>(y) + static_cast<double>(cell) * 0.5 + 4,
                 note, layer.removed ? " class=\"axis gone\"" : " class=\"axis\"");
  }
  s << "</svg>";
  return s.str();
}

std::string score_legend(const score_range& range) {
  std::ostringstream s;
  s << "<svg class=\"legend\" xmlns=\"http://www.w3.org/2000/svg\" width=\"460\" height=\"34\" viewBox=\"0 0 460 34\" role=\"img\" "
       "aria-label=\"legend\">"
    << gradient(score_scale, "score-scale") << rect(0, 4, 160, 14, "fill=\"url(#score-scale)\"")
    << text_at(0, 31, range.any ? "score " + short_number(range.low) : "no scores", " class=\"axis\"")
    << text_at(160, 31, range.any ? short_number(range.high) : "", " text-anchor=\"end\" class=\"axis\"")
    << rect(200, 2, 17, 17, "fill=\"" + colour(score_scale, 0.5) + "\"")
    << rect(201, 3, 15, 15, "class=\"removed\" fill=\"none\" stroke-width=\"2\"") << text_at(226, 16, "removed", " class=\"axis\"")
    << "<line x1=\"300\" y1=\"2\" x2=\"300\" y2=\"20\" class=\"group\"/>" << text_at(308, 16, "GQA group boundary", " class=\"axis\"")
    << "</svg>";
  return s.str();
}

std::string heat_map(const layer_view& layer, std::size_t index) {
  const auto n = layer.heads.size();
  const std::int64_t cell = std::clamp<std::int64_t>(176 / static_cast<std::int64_t>(std::max<std::size_t>(n, 1)), 3, 20);
  const std::int64_t margin = 6;  // the red marks of removed heads
  const std::int64_t side = margin + cell * static_cast<std::int64_t>(n) + 1;
  std::ostringstream s;
  s << "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << side << "\" height=\"" << side << "\" viewBox=\"0 0 " << side << ' '
    << side << "\" role=\"img\" aria-label=\"redundancy between the heads of layer " << index << "\">";
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t at = margin + cell * static_cast<std::int64_t>(i);
    if (layer.heads[i].removed || layer.removed) {
      s << rect(at, 0, cell - 1, margin - 2, "class=\"mark\"") << rect(0, at, margin - 2, cell - 1, "class=\"mark\"");
    }
    for (std::size_t j = 0; j < n; ++j) {
      const double v = layer.redundancy[i * n + j];
      s << rect(margin + cell * static_cast<std::int64_t>(j), at, cell, cell, "fill=\"" + colour(redundancy_scale, (v + 1) / 2) + "\"",
                "head " + std::to_string(i) + " · head " + std::to_string(j) + ": " + number(v, 3));
    }
  }
  s << "</svg><figcaption>layer " << index << (layer.removed ? " (removed)" : "") << "</figcaption></figure>";
  return s.str();
}

std::string redundancy_legend() {
  std::ostringstream s;
  s << "<svg class=\"legend\" xmlns=\"http://www.w3.org/2000/svg\" width=\"420\" height=\"34\" viewBox=\"0 0 420 34\" role=\"img\" "
       "aria-label=\"legend\">"
    << gradient(redundancy_scale, "redundancy-scale") << rect(0, 4, 160, 14, "fill=\"url(#redundancy-scale)\"")
    << text_at(0, 31, "&#8722;1", " class=\"axis\"") << text_at(80, 31, "0", " text-anchor=\"middle\" class=\"axis\"")
    << text_at(160, 31, "1", " text-anchor=\"end\" class=\"axis\"") << rect(200, 6, 12, 4, "class=\"mark\"")
    << text_at(220, 16, "removed head (row and column)", " class=\"axis\"") << "</svg>";
  return s.str();
}

std::string bytes_chart(const std::vector<kind_bytes>& kinds) {
  std::int64_t largest = 1;
  for (const auto& k : kinds) largest = std::max(largest, k.bytes.before);
  const std::int64_t left = 150;
  const std::int64_t bar = 360;
  const std::int64_t row = 26;
  const std::int64_t height = row * static_cast<std::int64_t>(kinds.size()) + 4;
  std::ostringstream s;
  s << "<svg class=\"bytes\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << left + bar + 170 << "\" height=\"" << height << "\" viewBox=\"0 0 "
    << left + bar + 170 << ' ' << height << "\" role=\"img\" aria-label=\"bytes before and after per tensor kind\">";
  for (std::size_t i = 0; i < kinds.size(); ++i) {
    const auto& k = kinds[i];
    const std::int64_t y = row * static_cast<std::int64_t>(i) + 2;
    const auto length = [&](std::int64_t bytes) { return static_cast<std::int64_t>(std::llround(static_cast<double>(bar) * static_cast<double>(bytes) / static_cast<double>(largest))); };
    s << text_at(left - 8, static_cast<double>(y) + 15, html_escape(k.kind), " text-anchor=\"end\" class=\"axis\"")
      << rect(left, y + 2, std::max<std::int64_t>(length(k.bytes.before), 1), 9, "class=\"before\"")
      << rect(left, y + 12, std::max<std::int64_t>(length(k.bytes.after), k.bytes.after > 0 ? 1 : 0), 9, "class=\"after\"");
    const double saved = k.bytes.before > 0 ? 100.0 * static_cast<double>(k.bytes.saved()) / static_cast<double>(k.bytes.before) : 0.0;
    s << text_at(static_cast<double>(left + bar + 8), static_cast<double>(y) + 15, (saved > 0 ? "&#8722;" : "") + number(saved, 1) + " %", " class=\"axis\"");
  }
  s << "</svg>";
  return s.str();
}

std::string bytes_table(const std::vector<kind_bytes>& kinds) {
  std::ostringstream s;
  s << "<table class=\"numbers\"><thead><tr><th>tensor kind</th><th>tensors</th><th>bytes before</th><th>bytes after</th><th>saved</th></tr></thead><tbody>";
  nashprune::tensor_bytes total;
  std::int64_t count = 0;
  const auto saved = [](const nashprune::tensor_bytes& b) {
    return b.before > 0 ? number(100.0 * static_cast<double>(b.saved()) / static_cast<double>(b.before), 1) + " %" : std::string("–");
  };
  for (const auto& k : kinds) {
    s << "<tr><td>" << html_escape(k.kind) << "</td><td>" << k.tensors << "</td><td>" << grouped(k.bytes.before) << "</td><td>"
      << grouped(k.bytes.after) << "</td><td>" << saved(k.bytes) << "</td></tr>";
    total.before += k.bytes.before;
    total.after += k.bytes.after;
    count += k.tensors;
  }
  s << "</tbody><tfoot><tr><th>all</th><th>" << count << "</th><th>" << grouped(total.before) << "</th><th>" << grouped(total.after) << "</th><th>"
    << saved(total) << "</th></tr></tfoot></table>";
  return s.str();
}

std::string scores_table(const prune_report& r) {
  std::ostringstream s;
  s << "<details><summary>Every head's numbers</summary><table class=\"numbers\"><thead><tr><th>layer</th><th>head</th><th>score</th>"
       "<th>participation</th><th>removed</th></tr></thead><tbody>";
  for (std::size_t l = 0; l < r.layers.size(); ++l) {
    const auto& layer = r.layers[l];
    for (std::size_t h = 0; h < layer.heads.size(); ++h) {
      const auto& c = layer.heads[h];
      s << "<tr><td>" << l << "</td><td>" << h << "</td><td>" << (c.score ? short_number(*c.score) : "–") << "</td><td>"
        << (c.participation ? number(*c.participation, 3) : "–") << "</td><td>"
        << (layer.removed ? "with its layer" : c.removed ? "yes" : "") << "</td></tr>";
    }
  }
  s << "</tbody></table></details>";
  return s.str();
}

constexpr const char* style = R"(
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; padding: 0 16px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; } td, th { padding: 2px 10px 2px 0; text-align: left; }
table.numbers td, table.numbers th { text-align: right; padding: 2px 8px; border-bottom: 1px solid #eee; }
table.numbers td:first-child, table.numbers th:first-child { text-align: left; }
.axis { font: 11px system-ui, sans-serif; fill: #444; } .gone { fill: #cb181d; }
.removed { stroke: #e41a1c; } .mark { fill: #cb181d; } .group { stroke: #222; stroke-width: 1; }
.before { fill: #bdbdbd; } .after { fill: #3182bd; }
.maps { display: flex; flex-wrap: wrap; gap: 14px; } figure { margin: 0; } figcaption { font-size: 12px; text-align: center; }
.note { color: #555; } .ppl td { font-variant-numeric: tabular-nums; }
)";

}  // namespace

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::vector<kind_bytes> bytes_per_kind(const std::vector<tensor_entry>& tensors) {
  std::vector<nashprune::tensor_plan> plans;
  plans.reserve(tensors.size());
  for (const auto& t : tensors) plans.push_back(t.plan);
  const auto savings = nashprune::memory_savings(plans);
  std::vector<kind_bytes> kinds;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    auto it = std::ranges::find(kinds, tensors[i].kind, &kind_bytes::kind);
    if (it == kinds.end()) it = kinds.insert(kinds.end(), kind_bytes{tensors[i].kind, 0, {}});
    ++it->tensors;
    it->bytes.before += savings.tensors[i].before;
    it->bytes.after += savings.tensors[i].after;
  }
  return kinds;
}

std::string render_html(const prune_report& r) {
  validate(r);
  const auto kinds = bytes_per_kind(r.tensors);
  const auto range = scores_of(r);
  std::ostringstream s;
  const auto title = "nashprune prune: " + html_escape(r.model) + (r.output.empty() ? " (dry run)" : " &#8594; " + html_escape(r.output));
  s << "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    << "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
    << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    << "<title>" << title << "</title>\n<style>" << style << "</style></head>\n<body>\n<h1>" << title << "</h1>\n";

  s << "<table class=\"facts\">";
  for (const auto& [label, value] : r.facts) s << "<tr><th>" << html_escape(label) << "</th><td>" << html_escape(value) << "</td></tr>";
  s << "</table>\n";

  s << "<h2>Perplexity</h2>\n";
  if (r.perplexity) {
    const auto& p = *r.perplexity;
    s << "<table class=\"ppl\"><tr><th>before</th><td>" << number(p.before, 3) << "</td></tr><tr><th>after</th><td>" << number(p.after, 3)
      << "</td></tr><tr><th>ratio</th><td>" << number(p.after / p.before, 3) << "</td></tr></table>\n<p class=\"note\">on "
      << html_escape(p.text) << (p.protocol.empty() ? "" : ", " + html_escape(p.protocol)) << "</p>\n";
  } else {
    s << "<p class=\"note\">not measured</p>\n";
  }

  s << "<h2>Heads</h2>\n<p class=\"note\">Each cell is a query head; its colour is the score the selection ranked it by"
    << (range.any ? "" : " (none: the plan came from elsewhere)") << ". Hover a cell for its numbers.</p>\n"
    << score_legend(range) << "\n<div>" << heads_grid(r, range) << "</div>\n" << scores_table(r) << '\n';

  s << "<h2>Redundancy between heads</h2>\n";
  const bool any_map = std::ranges::any_of(r.layers, [](const layer_view& l) { return !l.redundancy.empty(); });
  if (any_map) {
    s << "<p class=\"note\">" << html_escape(r.redundancy_source) << ", per layer.</p>\n" << redundancy_legend() << "\n<div class=\"maps\">";
    for (std::size_t l = 0; l < r.layers.size(); ++l) {
      if (!r.layers[l].redundancy.empty()) s << heat_map(r.layers[l], l);
    }
    s << "</div>\n";
  } else {
    s << "<p class=\"note\">not known for this model</p>\n";
  }

  s << "<h2>Bytes per tensor kind</h2>\n<p class=\"note\">The bytes the GGUF files hold: grey before, blue after.</p>\n"
    << bytes_chart(kinds) << '\n' << bytes_table(kinds) << "\n</body></html>\n";
  return s.str();
}

void write_html(const std::filesystem::path& path, const prune_report& report) {
  const auto page = render_html(report);
  // Beside the output (same file system: the rename is atomic), named by process.
  const std::filesystem::path temporary = path.string() + ".partial." + std::to_string(::getpid());
  std::error_code ignored;
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << page;
    out.close();
    if (!out) {
      std::filesystem::remove(temporary, ignored);
      throw std::runtime_error("cannot write the report " + path.string() + " (through " + temporary.string() + ")");
    }
  }
  std::error_code renamed;
  std::filesystem::rename(temporary, path, renamed);
  if (renamed) {
    std::filesystem::remove(temporary, ignored);
    throw std::runtime_error("cannot rename " + temporary.string() + " onto the report " + path.string() + ": " + renamed.message());
  }
}

}  // namespace report
