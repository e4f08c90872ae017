// A pruning run as one self-contained HTML page (`nashprune prune --report`):
// inline SVG and inline CSS only, no script and nothing loaded from anywhere (a
// Content-Security-Policy of default-src 'none' in the page itself refuses any
// load), so it opens offline in any browser and can be mailed as one file.
//
// It shows the layers × heads grid (each head's score as colour, removed heads
// framed, removed layers struck), each layer's head-to-head redundancy as a heat
// map, the bytes before and after per tensor kind (memory_savings.hpp over the
// tensors' shapes and types: the bytes the GGUF files hold) and, when the caller
// measured it, the perplexity before and after.
//
// The renderer takes plain structs and knows nothing of GGUF (prune_report.hpp
// fills them from a model and a plan). Every string is HTML-escaped; every
// number is checked (finite, sizes consistent) before anything is written, and a
// bad one is a std::invalid_argument naming the field and its index.
#pragma once

#include <nashprune/memory_savings.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace report {

/// One query head of a layer.
struct head_cell {
  bool removed = false;
  std::optional<double> score;          // the importance the selection ranked it by (any finite value)
  std::optional<double> participation;  // its Nash participation s_i in [0, 1], when a game was played
};

/// One layer of the input model.
struct layer_view {
  bool removed = false;            // the whole layer went
  std::int64_t kv_heads = 0;       // query heads form kv_heads equal groups (GQA); 0 with no heads
  std::vector<head_cell> heads;    // one per query head of the input
  // heads.size()² values, row-major: redundancy of head i with head j, a cosine
  // in [-1, 1]; empty when not known for this layer.
  std::vector<double> redundancy;
};

/// The perplexity of the input and of the output on one text, filled by the
/// caller that measured it (e.g. with llama-perplexity); the page says "not
/// measured" without it.
struct perplexity_measure {
  double before = 0;
  double after = 0;
  std::string text;      // the evaluation text, e.g. "tinystories-evaluation.txt"
  std::string protocol;  // how it was measured, e.g. "llama-perplexity -c 128 -b 128, every chunk"
};

/// A tensor and the kind it is summed under (e.g. "attn_q.weight" for every layer's query weights).
struct tensor_entry {
  std::string kind;
  nashprune::tensor_plan plan;
};

struct prune_report {
  std::string model;   // input file as the user named it
  std::string output;  // output file, or empty for a dry run
  // Lines of the run's summary, each a label and its value (method, target, ...).
  std::vector<std::pair<std::string, std::string>> facts;
  std::vector<layer_view> layers;
  std::string redundancy_source;  // what the heat maps show, e.g. "cosine of the heads' attn_output columns"
  // Every tensor of the input with its shape and type before and after (a removed
  // layer's tensors have 0 rows after); bytes per kind come from memory_savings.
  std::vector<tensor_entry> tensors;
  std::optional<perplexity_measure> perplexity;
};

/// `text` with &, <, >, " and ' replaced by character references: safe in text
/// and in attribute values.
[[nodiscard]] std::string html_escape(std::string_view text);

/// Bytes before and after (memory_savings) summed per tensor kind, in order of
/// first appearance.
struct kind_bytes {
  std::string kind;
  std::int64_t tensors = 0;
  nashprune::tensor_bytes bytes;
};
[[nodiscard]] std::vector<kind_bytes> bytes_per_kind(const std::vector<tensor_entry>& tensors);

/// The page. Throws std::invalid_argument naming the field and index for a
/// non-finite number, a redundancy matrix of the wrong size or outside [-1, 1],
/// heads that do not split into kv_heads groups, or a non-positive perplexity.
[[nodiscard]] std::string render_html(const prune_report& report);

/// Renders and writes the page to a temporary file beside `path`, then renames
/// it onto `path` (an interrupted run leaves no partial page). Throws
/// std::runtime_error naming the file when it cannot be written.
void write_html(const std::filesystem::path& path, const prune_report& report);

}  // namespace report
