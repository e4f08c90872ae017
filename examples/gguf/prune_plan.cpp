// Applying a pruning plan to a llama-family GGUF: metadata, tensor table, slices.
#include "gguf/prune_plan.hpp"

#include <nashprune/tensor_slicing.hpp>

#include "gguf/float_encode.hpp"
#include "gguf/tensor_floats.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace gguf {
namespace {

using nashprune::index_range;
using nashprune::tensor_role;

std::string layer_name(std::size_t layer) { return "layer " + std::to_string(layer); }

// Which --structures choices avoid a column slice of this tensor.
std::string avoiding_structures(std::string_view suffix, const nashprune::attention_geometry* geometry, std::int64_t block) {
  if (suffix.starts_with("ffn_down")) {
    return "prune MLP channels in multiples of " + std::to_string(block) +
           " or leave 'mlp' out of --structures (mlp-blocks and layers need no column slices)";
  }
  std::string advice = "leave 'heads' and 'groups' out of --structures (attn-blocks and layers need no column slices)";
  if (geometry != nullptr && (geometry->group_size() * geometry->head_dim_v()) % block == 0) {
    advice = "use --structures groups (a GQA group is " + std::to_string(geometry->group_size() * geometry->head_dim_v()) +
             " columns, block-aligned), or attn-blocks / layers";
  }
  return advice;
}

class output_builder {
 public:
  output_builder(const reader& model, const llama_shape& shape, const prune_plan& plan)
      : model_(model), in_(shape), plan_(plan) {}

  pruned_model build(const metadata& provenance) {
    check_plan();
    decide_output_shape();
    out_.metadata = model_.metadata();
    rewrite_metadata();
    for (const auto& [key, v] : provenance) set(out_.metadata, key, v);
    for (const auto& t : model_.tensors()) add_tensor(t);
    return std::move(out_);
  }

 private:
  const reader& model_;
  const llama_shape& in_;
  const prune_plan& plan_;
  pruned_model out_;
  std::vector<std::int64_t> new_index_;  // original layer -> output layer (-1: removed)
  std::vector<bool> zero_attention_;     // output layer keeps a placeholder head with zero output
  std::vector<std::int64_t> stub_width_;  // output layer's zero FFN stub width (0: real FFN)

  nashprune::attention_geometry geometry(std::size_t layer) const {
    const auto& l = in_.layers[layer];
    return {l.n_head, l.n_head_kv, in_.head_dim_k, in_.head_dim_v};
  }

  void check_plan() {
    if (plan_.layers.size() != in_.layers.size()) {
      throw std::invalid_argument("plan has " + std::to_string(plan_.layers.size()) + " layers, the model " +
                                  std::to_string(in_.layers.size()));
    }
    std::int64_t next = 0;
    for (std::size_t i = 0; i < plan_.layers.size(); ++i) {
      const auto& p = plan_.layers[i];
      new_index_.push_back(p.keep_layer ? next++ : -1);
      if (!p.keep_layer) continue;
      const auto& l = in_.layers[i];
      try {
        if (l.has_attention()) {
          (void)geometry(i).validate(p.heads, /*allow_empty=*/true);
        } else if (!p.heads.q_heads.empty() || !p.heads.kv_heads.empty()) {
          throw std::invalid_argument("keeps heads of an attention-free layer");
        }
        nashprune::validate_keep_list("channels", p.channels, l.n_ff, /*allow_empty=*/true);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument("plan for " + layer_name(i) + ": " + e.what());
      }
    }
    if (next == 0) throw std::invalid_argument("plan removes every layer");
  }

  void decide_output_shape() {
    out_.shape = in_;
    out_.shape.layers.clear();
    for (std::size_t i = 0; i < plan_.layers.size(); ++i) {
      const auto& p = plan_.layers[i];
      if (!p.keep_layer) continue;
      layer_shape s{static_cast<std::int64_t>(p.heads.q_heads.size()), static_cast<std::int64_t>(p.heads.kv_heads.size()),
                    static_cast<std::int64_t>(p.channels.size())};
      // llama.cpp derives the head size from layer 0: it keeps one head whose output is zeroed.
      const bool placeholder = out_.shape.layers.empty() && s.n_head == 0;
      if (placeholder) s = {1, 1, s.n_ff};
      zero_attention_.push_back(placeholder);
      std::int64_t stub = 0;
      if (s.n_ff == 0) {
        stub = nashprune::traits_of(model_.tensor(layer_tensor(static_cast<std::int64_t>(i), "ffn_down.weight")).type).block_size;
        s.n_ff = stub;
      }
      stub_width_.push_back(stub);
      out_.shape.layers.push_back(s);
    }
    if (!out_.shape.uniform()) out_.shape.architecture = "deci";
  }

  void rewrite_metadata() {
    auto& kv = out_.metadata;
    if (out_.shape.architecture != in_.architecture) {
      const std::string from = in_.architecture + ".";
      const std::string to = out_.shape.architecture + ".";
      for (auto& [key, v] : kv) {
        if (key.starts_with(from)) key = to + key.substr(from.size());
      }
      set(kv, "general.architecture", value::string(out_.shape.architecture));
    }
    const auto& s = out_.shape;
    // Other per-layer arrays of the architecture lose the removed layers' entries.
    for (auto& [key, v] : kv) {
      if (key.starts_with(s.architecture + ".") && v.is_array() &&
          static_cast<std::int64_t>(v.as_array().size()) == in_.n_layer()) {
        std::vector<value> kept;
        for (std::size_t i = 0; i < new_index_.size(); ++i) {
          if (new_index_[i] >= 0) kept.push_back(v.as_array()[i]);
        }
        v = value::array(v.element_type, std::move(kept));
      }
    }
    set(kv, s.key("block_count"), value::u32(static_cast<std::uint32_t>(s.n_layer())));
    auto write_count = [&](std::string_view suffix, auto member) {
      if (s.uniform()) {
        set(kv, s.key(suffix), value::u32(static_cast<std::uint32_t>(s.layers.front().*member)));
      } else {
        std::vector<std::int64_t> counts;
        for (const auto& l : s.layers) counts.push_back(l.*member);
        set(kv, s.key(suffix), value::int_array(value_type::int32, counts));
      }
    };
    write_count("attention.head_count", &layer_shape::n_head);
    write_count("attention.head_count_kv", &layer_shape::n_head_kv);
    write_count("feed_forward_length", &layer_shape::n_ff);
    set(kv, s.key("attention.key_length"), value::u32(static_cast<std::uint32_t>(s.head_dim_k)));
    set(kv, s.key("attention.value_length"), value::u32(static_cast<std::uint32_t>(s.head_dim_v)));
  }

  void add(tensor_spec spec, tensor_source source) {
    out_.tensors.push_back(std::move(spec));
    out_.sources.push_back(std::move(source));
  }

  // A slice of `t` keeping `ranges` along rows (dims[1]) or within each row (dims[0]).
  void add_slice(const tensor_view& t, std::string name, tensor_source::kind how, std::vector<index_range> ranges,
                 std::string_view suffix, const nashprune::attention_geometry* g) {
    tensor_spec spec{std::move(name), t.dims, t.type};
    std::int64_t kept = 0;
    for (const auto& r : ranges) kept += r.size;
    const auto& traits = nashprune::traits_of(t.type);
    if (how == tensor_source::kind::columns) {
      const bool aligned = std::ranges::all_of(ranges, [&](const index_range& r) {
        return r.begin % traits.block_size == 0 && r.size % traits.block_size == 0;
      });
      // Quantization blocks the slice splits are decoded and written F16.
      if (!aligned && t.dims.size() == 2 && can_dequantize(t.type)) {
        spec.type = nashprune::ggml_type::f16;
        out_.retyped.push_back({spec.name, t.type});
      }
      for (const auto& r : ranges) {
        if (spec.type == t.type && (r.begin % traits.block_size != 0 || r.size % traits.block_size != 0)) {
          throw std::invalid_argument(
              "tensor '" + t.name + "' is " + std::string(traits.name) + " (blocks of " + std::to_string(traits.block_size) +
              " columns): keeping columns [" + std::to_string(r.begin) + ", " + std::to_string(r.end()) +
              ") is not block-aligned; " + avoiding_structures(suffix, g, traits.block_size));
        }
      }
      spec.dims[0] = kept;
    } else {
      if (t.dims.size() != 2) throw std::invalid_argument("tensor '" + t.name + "' is not a matrix");
      spec.dims[1] = kept;
    }
    const std::int64_t full = how == tensor_source::kind::columns ? t.dims[0] : t.dims[1];
    if (ranges.size() == 1 && ranges.front() == index_range{0, full}) how = tensor_source::kind::copy;
    add(std::move(spec), {how, &t, std::move(ranges), {}});
  }

  void add_tensor(const tensor_view& t) {
    const auto split = split_layer_name(t.name);
    if (!split) {
      add({t.name, t.dims, t.type}, {tensor_source::kind::copy, &t, {}, {}});
      return;
    }
    const auto layer = static_cast<std::size_t>(split->layer);
    const std::int64_t out_layer = new_index_[layer];
    if (out_layer < 0) return;
    const auto& p = plan_.layers[layer];
    const auto& suffix = split->suffix;
    const std::string name = layer_tensor(out_layer, suffix);
    const auto o = static_cast<std::size_t>(out_layer);
    const auto& l = in_.layers[layer];

    const bool attention_tensor = suffix.starts_with("attn_");
    if (attention_tensor) {
      if (!l.has_attention()) {
        add({name, t.dims, t.type}, {tensor_source::kind::copy, &t, {}, {}});
        return;
      }
      nashprune::head_keep_plan heads = p.heads;
      if (zero_attention_[o]) heads = {{0}, {0}};
      if (heads.q_heads.empty()) return;  // attention-free layer: no attention tensors at all
      const auto g = geometry(layer);
      if (out_.shape.architecture == "deci" && suffix.ends_with(".bias") && suffix != "attn_output.bias") {
        throw std::invalid_argument("tensor '" + t.name +
                                    "': llama.cpp's deci loader sizes attention biases from n_embd, so a model with "
                                    "attention biases cannot take per-layer head counts; prune uniformly");
      }
      auto head_rows = [&](tensor_role role) { return g.kept_ranges(heads, role); };
      const auto rows = tensor_source::kind::rows;
      const auto columns = tensor_source::kind::columns;
      if (suffix == "attn_q.weight") return add_slice(t, name, rows, head_rows(tensor_role::q), suffix, &g);
      if (suffix == "attn_k.weight") return add_slice(t, name, rows, head_rows(tensor_role::k), suffix, &g);
      if (suffix == "attn_v.weight") return add_slice(t, name, rows, head_rows(tensor_role::v), suffix, &g);
      if (suffix == "attn_q.bias") return add_slice(t, name, columns, head_rows(tensor_role::q), suffix, &g);
      if (suffix == "attn_k.bias") return add_slice(t, name, columns, head_rows(tensor_role::k), suffix, &g);
      if (suffix == "attn_v.bias") return add_slice(t, name, columns, head_rows(tensor_role::v), suffix, &g);
      if (suffix == "attn_output.weight") {
        if (zero_attention_[o]) {
          add({name, {g.head_dim_v(), t.dims[1]}, t.type}, {tensor_source::kind::zeros, nullptr, {}, {}});
          return;
        }
        return add_slice(t, name, columns, head_rows(tensor_role::o), suffix, &g);
      }
      // Per-head q/k norms hold one weight vector per head; a shared one is head_dim long.
      if (suffix == "attn_q_norm.weight" && t.dims[0] == g.extent(tensor_role::q)) {
        return add_slice(t, name, columns, head_rows(tensor_role::q), suffix, &g);
      }
      if (suffix == "attn_k_norm.weight" && t.dims[0] == g.extent(tensor_role::k)) {
        return add_slice(t, name, columns, head_rows(tensor_role::k), suffix, &g);
      }
      add({name, t.dims, t.type}, {tensor_source::kind::copy, &t, {}, {}});
      return;
    }

    const bool ffn_tensor = suffix.starts_with("ffn_gate") || suffix.starts_with("ffn_up") || suffix.starts_with("ffn_down");
    if (ffn_tensor && suffix != "ffn_down.bias") {
      if (stub_width_[o] > 0) {
        tensor_spec spec{name, t.dims, t.type};
        spec.dims[suffix.starts_with("ffn_down") || spec.dims.size() == 1 ? 0 : 1] = stub_width_[o];
        add(std::move(spec), {tensor_source::kind::zeros, nullptr, {}, {}});
        return;
      }
      auto kept = nashprune::unit_ranges(p.channels, 1);
      const bool matrix_rows = !suffix.starts_with("ffn_down") && t.dims.size() == 2;
      add_slice(t, name, matrix_rows ? tensor_source::kind::rows : tensor_source::kind::columns, std::move(kept), suffix, nullptr);
      return;
    }
    add({name, t.dims, t.type}, {tensor_source::kind::copy, &t, {}, {}});
  }
};

// Parameters and bytes of tensors described (tensor_spec) or read (tensor_view).
template <typename Tensor>
tensor_totals sum_totals(std::span<const Tensor> tensors) {
  tensor_totals t;
  for (const auto& tensor : tensors) {
    t.parameters += tensor.elements();
    t.bytes += tensor.bytes();
  }
  return t;
}

}  // namespace

prune_plan keep_all(const llama_shape& shape) {
  prune_plan plan;
  for (const auto& l : shape.layers) {
    layer_plan p;
    for (std::int64_t h = 0; h < l.n_head; ++h) p.heads.q_heads.push_back(h);
    for (std::int64_t h = 0; h < l.n_head_kv; ++h) p.heads.kv_heads.push_back(h);
    for (std::int64_t c = 0; c < l.n_ff; ++c) p.channels.push_back(c);
    plan.layers.push_back(std::move(p));
  }
  return plan;
}

tensor_totals totals(std::span<const tensor_spec> tensors) { return sum_totals(tensors); }

tensor_totals totals(std::span<const tensor_view> tensors) { return sum_totals(tensors); }

pruned_model plan_output(const reader& model, const llama_shape& shape, const prune_plan& plan, const metadata& provenance) {
  return output_builder(model, shape, plan).build(provenance);
}

namespace {
// Rows of a column-sliced tensor are gathered in bands of about this many bytes.
constexpr std::size_t column_band_bytes = std::size_t{256} << 10;
}  // namespace

namespace {
// The kept columns of a quantized tensor, decoded and written in spec.type (F16), row by row.
void write_decoded_columns(const tensor_view& from, std::span<const index_range> ranges, const tensor_spec& spec, writer& out) {
  std::vector<float> row(static_cast<std::size_t>(from.dims[0]));
  std::vector<float> kept;
  kept.reserve(static_cast<std::size_t>(spec.dims[0]));
  const auto in_row = static_cast<std::size_t>(from.row_bytes());
  for (std::int64_t r = 0; r < spec.rows(); ++r) {
    dequantize(from.type, from.data.subspan(static_cast<std::size_t>(r) * in_row, in_row), row);
    kept.clear();
    for (const auto& range : ranges) kept.insert(kept.end(), row.begin() + range.begin, row.begin() + range.end());
    const auto bytes = encode_floats(spec.type, kept);
    for (std::size_t c = 0; c < kept.size(); ++c) {
      std::uint16_t h = 0;
      std::memcpy(&h, bytes.data() + 2 * c, 2);
      if (!std::isfinite(half_to_float(h))) {
        throw std::runtime_error(spec.name + ": value " + std::to_string(kept[c]) + " at row " + std::to_string(r) + ", column " +
                                 std::to_string(c) + " is not finite as F16; nothing written");
      }
    }
    out.write(bytes);
  }
}
}  // namespace

void write_tensors(const reader& model, const pruned_model& result, writer& out,
                   const std::function<void(std::uint64_t, std::uint64_t)>& progress) {
  const std::uint64_t total = totals(result.tensors).bytes;
  std::uint64_t done = 0;
  std::vector<std::byte> columns;  // one column-sliced tensor at a time
  std::vector<std::span<const std::byte>> pieces;  // small row ranges of one tensor
  // Bytes of the input go file to file where the kernel can (writer::copy).
  const auto emit = [&](std::span<const std::byte> bytes) {
    if (const auto extent = model.extent_of(bytes)) {
      out.copy(bytes, *extent);
    } else {
      out.write(bytes);
    }
  };
  for (std::size_t i = 0; i < result.tensors.size(); ++i) {
    const auto& spec = result.tensors[i];
    const auto& source = result.sources[i];
    switch (source.how) {
      case tensor_source::kind::copy:
        emit(source.from->data);
        break;
      case tensor_source::kind::zeros:
        out.write_zeros(spec.bytes());
        break;
      case tensor_source::kind::bytes:
        if (source.bytes == nullptr || source.bytes->size() != spec.bytes()) throw std::logic_error(spec.name + ": computed data of the wrong size");
        out.write(*source.bytes);
        break;
      case tensor_source::kind::rows: {
        // Large row ranges go file to file; runs of small ones in one gathered write.
        const std::uint64_t row = source.from->row_bytes();
        for (const auto& r : source.ranges) {
          const auto piece = source.from->data.subspan(static_cast<std::size_t>(r.begin) * row, static_cast<std::size_t>(r.size) * row);
          if (piece.size() < writer::kernel_copy_size) {
            pieces.push_back(piece);
            continue;
          }
          out.write_gathered(pieces);
          pieces.clear();
          emit(piece);
        }
        out.write_gathered(pieces);
        pieces.clear();
        break;
      }
      case tensor_source::kind::columns: {
        // Gathered a band of rows at a time into a buffer that stays in cache
        // while the kernel copies it out.
        const auto in_row = static_cast<std::size_t>(source.from->row_bytes());
        const auto out_row = static_cast<std::size_t>(spec.row_bytes());
        if (spec.type != source.from->type) {
          write_decoded_columns(*source.from, source.ranges, spec, out);
          break;
        }
        const auto band = static_cast<std::int64_t>(std::max<std::size_t>(1, column_band_bytes / std::max<std::size_t>(out_row, 1)));
        model.populate(source.from->data);
        for (std::int64_t first = 0; first < spec.rows(); first += band) {
          const std::int64_t n = std::min(band, spec.rows() - first);
          const nashprune::ggml_matrix_view view{source.from->type, source.from->dims[0], n, 0,
                                                 source.from->data.subspan(static_cast<std::size_t>(first) * in_row,
                                                                           static_cast<std::size_t>(n) * in_row)};
          columns.resize(static_cast<std::size_t>(n) * out_row);
          nashprune::gather_ggml_cols(view, source.ranges, nashprune::ggml_matrix_span{spec.type, spec.dims[0], n, 0, columns});
          out.write(columns);
        }
        break;
      }
    }
    if (source.from != nullptr) model.release(source.from->data);
    done += spec.bytes();
    if (progress) progress(done, total);
  }
}

}  // namespace gguf
