// Per-tensor quantization types for a real model under a size budget, for
// llama-quantize's --tensor-type-file.
//
// The tensors planned are those llama-quantize quantizes (2-D and larger, named
// "*weight", not norms; its tensor_allows_quantization). For each and each
// candidate type, the error is measured by quantizing the weights with ggml
// (ggml_quantize.hpp) and weighting the squared difference by the input's energy
// (nashprune/quantization_error.hpp):
//   --imatrix:      c_j = the importance matrix's mean x_j² (as llama-quantize
//                   normalises it; ggml's quantizers get it too, as llama-quantize
//                   passes it);
//   --calibration:  c_j measured for attn_output and ffn_down, g_j² of the preceding
//                   RMS norm for the Q, K, V, gate, up and output projections;
//   neither:        c_j = 1 (the weights' own squared error);
// the token embedding is a lookup, each row read as often as any other (r_i = 1/rows);
// with tied embeddings it is also the output projection, weighted as one, plus 1/rows.
// Tensors of more than `sample_weights` weights are measured on evenly spaced rows
// holding about that many and the error scaled by rows / sampled (the estimate of a
// mean over a million weights is far finer than the differences between types). A type whose block does not
// divide a tensor's rows is skipped for that tensor; a tensor no candidate fits
// keeps F16 (llama-quantize's own fallback for such rows).
// With a measured sensitivity (plan_options::loss) the cost of a (tensor, type) is
// instead what it costs in loss on a calibration text. With W the tensor, δ the
// change that quantizing it to that type alone makes (ggml's routines, as above,
// on every row) and L the text's mean next-token NLL,
//     cost = ½ (L(W + δ) + L(W − δ)) − L(W) = ½ δᵀ H δ + O(δ⁴),
// clamped at 0: the symmetric difference cancels the first-order term g·δ, whose
// sign is the rounding's draw against this text's own gradient (L(W + δ) − L(W)
// alone is below 0 for a quarter of stories260K's tensors at 4 bits on a few hundred
// tokens), and keeps the curvature, which any text of the model's domain shares.
// With plan_options::scale_energy the loss is measured at one type per tensor only,
// its candidate of fewest bits (the largest change, so the loss stands furthest
// above the noise of a finite text), and the other types cost the energy-weighted
// error above times that tensor's ratio of loss to energy-weighted error at that
// type: the measured loss ranks the tensors, the energy-weighted error (exact for
// each type's own rounding) the types of one tensor.
// It is measured in-process through llama.cpp (loss_sensitivity.hpp) on a copy of
// the model with the planned tensors stored as F32 (written to the system's
// temporary folder and removed afterwards), so the cost is 1 + 2 × (tensors ×
// candidate types) passes over the text (1 + 2 × tensors with scale_energy); a
// type the tensor already has costs 0.
// The allocation is nashprune::allocate_bits_measured (convex hull, LP bound) or the
// seed's quantile rule. A --size budget is the output file's size: the header
// llama-quantize writes (the model's keys plus general.quantization_version,
// general.file_type and, with an imatrix, its quantize.imatrix.* keys), the tensors
// it leaves alone and every tensor's padding to the alignment are counted exactly.
#pragma once

#include <nashprune/bit_allocation.hpp>

#include "calibrate/text_source.hpp"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace quantize {

struct plan_options {
  std::filesystem::path model;
  std::optional<double> bits_per_weight;   // over the planned tensors
  std::optional<std::int64_t> file_bytes;  // the output file's size
  std::filesystem::path calibration;       // nashprune calibrate statistics (or empty)
  std::filesystem::path imatrix;           // llama-imatrix output (or empty)
  std::vector<nashprune::ggml_type> types;
  bool quantile = false;                   // the seed's rule instead of the hull allocator
  std::int64_t sample_weights = 1 << 20;   // 0: every row
  int threads = 0;                         // 0: all cores
  // Measured sensitivity: the text, tokens, context and threads of the loss
  // passes (loss->model is ignored: the float copy of `model` is loaded), and the
  // first scored position of each chunk.
  std::optional<calibrate::text_source> loss;
  std::int64_t score_from = 0;
  bool scale_energy = false;  // measure the loss at one type per tensor and scale its energy errors
  // Costs written by write_costs for this model and these types, used instead of
  // measuring (one measurement serves every budget).
  std::filesystem::path costs;
};

struct planned_tensor {
  std::string name;
  std::int64_t row_length = 0;
  std::int64_t rows = 0;
  nashprune::ggml_type source = nashprune::ggml_type::f32;
  std::string weighting;                   // "imatrix", "calibration", "rms norm", "lookup", "plain", "loss"
  std::vector<double> errors;              // per candidate type, the cost allocated; +infinity where the type is unavailable
  std::int64_t rows_measured = 0;
  nashprune::ggml_type chosen = nashprune::ggml_type::f16;
  bool fixed = false;                      // no candidate fits: F16
};

struct quantization_plan {
  std::vector<nashprune::ggml_type> types;  // the candidates, as given
  std::vector<planned_tensor> tensors;
  nashprune::bit_allocation allocation;     // over the tensors that are not fixed
  std::int64_t budget_bytes = 0;            // for the planned tensors that are not fixed
  std::int64_t planned_bytes = 0;           // all planned tensors (fixed ones included)
  std::int64_t planned_weights = 0;
  std::int64_t predicted_file_bytes = 0;
  std::int64_t requested_file_bytes = 0;    // --size, else 0
  std::string base_type;                    // llama-quantize's positional type argument
  bool requantize = false;                  // some planned tensor is already quantized
  std::vector<std::string> notes;           // skipped types, fallbacks, missing statistics
  double seconds_measuring = 0;
  double baseline_nll = 0;                  // measured sensitivity: the text's NLL without quantization
  std::int64_t loss_passes = 0;             // and the passes over the text it took
  std::int64_t predicted_tokens = 0;        // per pass
};

/// Parses "q4_0,q5_0,f16": throws std::invalid_argument naming --types and the entry
/// for an unknown type, a type ggml does not quantize weights to, or a repeat.
[[nodiscard]] std::vector<nashprune::ggml_type> parse_types(const std::string& list);

/// Measures and allocates (see the header comment). Throws std::invalid_argument
/// naming the argument, file and tensor for bad input.
[[nodiscard]] quantization_plan make_plan(const plan_options& options);

/// Writes every planned tensor's cost per candidate type as a table (a header
/// "tensor" and the type names, then a name and its costs a line, tab-separated;
/// "inf" where the type is unavailable), through a temporary file renamed onto `path`.
void write_costs(const std::filesystem::path& path, const quantization_plan& plan);

/// Writes the plan as llama-quantize's --tensor-type-file (one "^name$=type" a line),
/// through a temporary file renamed onto `path`.
void write_tensor_type_file(const std::filesystem::path& path, const quantization_plan& plan);

}  // namespace quantize
