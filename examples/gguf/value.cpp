// GGUF metadata values: construction, typed access, encoding and printing.
#include "gguf/gguf.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <sstream>

namespace gguf {

std::string_view type_name(value_type type) {
  switch (type) {
    case value_type::uint8: return "UINT8";
    case value_type::int8: return "INT8";
    case value_type::uint16: return "UINT16";
    case value_type::int16: return "INT16";
    case value_type::uint32: return "UINT32";
    case value_type::int32: return "INT32";
    case value_type::float32: return "FLOAT32";
    case value_type::boolean: return "BOOL";
    case value_type::string: return "STRING";
    case value_type::array: return "ARRAY";
    case value_type::uint64: return "UINT64";
    case value_type::int64: return "INT64";
    case value_type::float64: return "FLOAT64";
  }
  return "UNKNOWN";
}

bool is_integer(value_type type) {
  switch (type) {
    case value_type::uint8: case value_type::int8: case value_type::uint16: case value_type::int16:
    case value_type::uint32: case value_type::int32: case value_type::uint64: case value_type::int64:
      return true;
    default:
      return false;
  }
}

bool is_signed(value_type type) {
  return type == value_type::int8 || type == value_type::int16 || type == value_type::int32 ||
         type == value_type::int64;
}

std::uint64_t min_encoded_size(value_type type) {
  switch (type) {
    case value_type::uint8: case value_type::int8: case value_type::boolean: return 1;
    case value_type::uint16: case value_type::int16: return 2;
    case value_type::uint32: case value_type::int32: case value_type::float32: return 4;
    case value_type::uint64: case value_type::int64: case value_type::float64: return 8;
    case value_type::string: return 8;
    case value_type::array: return 12;
  }
  return 1;
}

namespace {
// Range of an integer type, for checking values handed to the writer.
std::pair<std::int64_t, std::uint64_t> integer_range(value_type type) {
  switch (type) {
    case value_type::uint8: return {0, 0xFFu};
    case value_type::int8: return {-128, 127};
    case value_type::uint16: return {0, 0xFFFFu};
    case value_type::int16: return {-32768, 32767};
    case value_type::uint32: return {0, 0xFFFFFFFFu};
    case value_type::int32: return {std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max()};
    case value_type::uint64: return {0, std::numeric_limits<std::uint64_t>::max()};
    default: return {std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()};
  }
}

// A value of `type` holding `data` (the factories' common tail).
value make_value(value_type type, decltype(value::data) data) {
  value out;
  out.type = type;
  out.data = std::move(data);
  return out;
}

// An array of `element_type` whose elements `make` builds from `items`.
template <typename Item, typename Make>
value array_of(value_type element_type, const std::vector<Item>& items, Make make) {
  std::vector<value> values;
  values.reserve(items.size());
  for (const auto& v : items) values.push_back(make(v));
  return value::array(element_type, std::move(values));
}
}  // namespace

value value::integer(value_type type, std::int64_t v) {
  if (!is_integer(type)) throw std::invalid_argument("gguf: " + std::string(type_name(type)) + " is not an integer type");
  const auto [lo, hi] = integer_range(type);
  if (v < lo || (v > 0 && static_cast<std::uint64_t>(v) > hi)) {
    throw std::invalid_argument("gguf: " + std::to_string(v) + " does not fit " + std::string(type_name(type)));
  }
  return is_signed(type) ? make_value(type, v) : make_value(type, static_cast<std::uint64_t>(v));
}

value value::u64(std::uint64_t v) { return make_value(value_type::uint64, v); }
value value::f32(float v) { return make_value(value_type::float32, static_cast<double>(v)); }
value value::f64(double v) { return make_value(value_type::float64, v); }
value value::boolean(bool v) { return make_value(value_type::boolean, v); }
value value::string(std::string v) { return make_value(value_type::string, std::move(v)); }

value value::array(value_type element_type, std::vector<value> items) {
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (items[i].type != element_type) {
      throw std::invalid_argument("gguf: array of " + std::string(type_name(element_type)) + " has a " +
                                  std::string(type_name(items[i].type)) + " at index " + std::to_string(i));
    }
  }
  auto out = make_value(value_type::array, std::move(items));
  out.element_type = element_type;
  return out;
}

value value::int_array(value_type element_type, const std::vector<std::int64_t>& items) {
  return array_of(element_type, items, [element_type](std::int64_t v) { return integer(element_type, v); });
}

value value::f32_array(const std::vector<float>& items) { return array_of(value_type::float32, items, f32); }

value value::string_array(const std::vector<std::string>& items) {
  return array_of(value_type::string, items, [](const std::string& v) { return string(v); });
}

std::int64_t value::as_int() const {
  if (const auto* s = std::get_if<std::int64_t>(&data)) return *s;
  if (const auto* u = std::get_if<std::uint64_t>(&data)) {
    if (*u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      throw std::invalid_argument("gguf: value " + std::to_string(*u) + " is too large");
    }
    return static_cast<std::int64_t>(*u);
  }
  throw std::invalid_argument("gguf: expected an integer, found " + std::string(type_name(type)));
}

double value::as_float() const {
  if (const auto* d = std::get_if<double>(&data)) return *d;
  return static_cast<double>(as_int());
}

bool value::as_bool() const {
  if (const auto* b = std::get_if<bool>(&data)) return *b;
  throw std::invalid_argument("gguf: expected a BOOL, found " + std::string(type_name(type)));
}

const std::string& value::as_string() const {
  if (const auto* s = std::get_if<std::string>(&data)) return *s;
  throw std::invalid_argument("gguf: expected a STRING, found " + std::string(type_name(type)));
}

const std::vector<value>& value::as_array() const {
  if (const auto* a = std::get_if<std::vector<value>>(&data)) return *a;
  throw std::invalid_argument("gguf: expected an ARRAY, found " + std::string(type_name(type)));
}

std::string to_string(const value& v, std::size_t max_items) {
  std::ostringstream out;
  switch (v.type) {
    case value_type::string: out << '"' << v.as_string() << '"'; break;
    case value_type::boolean: out << (v.as_bool() ? "true" : "false"); break;
    case value_type::float32: case value_type::float64: out << v.as_float(); break;
    case value_type::array: {
      const auto& items = v.as_array();
      out << '[';
      for (std::size_t i = 0; i < items.size() && i < max_items; ++i) out << (i ? ", " : "") << to_string(items[i], max_items);
      if (items.size() > max_items) out << ", ... (" << items.size() << " items)";
      out << ']';
      break;
    }
    default:
      if (const auto* u = std::get_if<std::uint64_t>(&v.data)) out << *u;
      else out << std::get<std::int64_t>(v.data);
  }
  return out.str();
}

const value* find(const metadata& kv, std::string_view key) {
  for (const auto& [k, v] : kv) {
    if (k == key) return &v;
  }
  return nullptr;
}

void set(metadata& kv, std::string key, value v) {
  for (auto& [k, old] : kv) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  kv.emplace_back(std::move(key), std::move(v));
}

void erase(metadata& kv, std::string_view key) {
  std::erase_if(kv, [&](const auto& entry) { return entry.first == key; });
}

void encode_string(std::vector<std::byte>& out, std::string_view s) {
  encode_pod<std::uint64_t>(out, s.size());
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  out.insert(out.end(), p, p + s.size());
}

void encode(std::vector<std::byte>& out, const value& v) {
  switch (v.type) {
    case value_type::uint8: encode_pod(out, static_cast<std::uint8_t>(v.as_int())); break;
    case value_type::int8: encode_pod(out, static_cast<std::int8_t>(v.as_int())); break;
    case value_type::uint16: encode_pod(out, static_cast<std::uint16_t>(v.as_int())); break;
    case value_type::int16: encode_pod(out, static_cast<std::int16_t>(v.as_int())); break;
    case value_type::uint32: encode_pod(out, static_cast<std::uint32_t>(v.as_int())); break;
    case value_type::int32: encode_pod(out, static_cast<std::int32_t>(v.as_int())); break;
    case value_type::uint64: encode_pod(out, std::get<std::uint64_t>(v.data)); break;
    case value_type::int64: encode_pod(out, std::get<std::int64_t>(v.data)); break;
    case value_type::float32: encode_pod(out, static_cast<float>(v.as_float())); break;
    case value_type::float64: encode_pod(out, v.as_float()); break;
    case value_type::boolean: encode_pod(out, static_cast<std::uint8_t>(v.as_bool() ? 1 : 0)); break;
    case value_type::string: encode_string(out, v.as_string()); break;
    case value_type::array: {
      const auto& items = v.as_array();
      encode_pod(out, static_cast<std::uint32_t>(v.element_type));
      encode_pod<std::uint64_t>(out, items.size());
      for (const auto& item : items) {
        if (item.type != v.element_type) {
          throw std::invalid_argument("gguf: array of " + std::string(type_name(v.element_type)) +
                                      " holds a " + std::string(type_name(item.type)));
        }
        encode(out, item);
      }
      break;
    }
  }
}

std::uint64_t alignment_of(const metadata& kv) {
  const value* a = find(kv, alignment_key);
  if (a == nullptr) return default_alignment;
  if (a->type != value_type::uint32) {
    throw std::invalid_argument("gguf: general.alignment must be UINT32, found " + std::string(type_name(a->type)));
  }
  const auto alignment = static_cast<std::uint64_t>(a->as_int());
  if (alignment == 0 || !std::has_single_bit(alignment)) {
    throw std::invalid_argument("gguf: general.alignment " + std::to_string(alignment) + " is not a power of two");
  }
  return alignment;
}

std::int64_t tensor_spec::elements() const {
  std::int64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}

std::int64_t tensor_spec::rows() const {
  std::int64_t n = 1;
  for (std::size_t i = 1; i < dims.size(); ++i) n *= dims[i];
  return n;
}

std::uint64_t tensor_spec::row_bytes() const {
  return static_cast<std::uint64_t>(nashprune::row_bytes(type, dims.empty() ? 1 : dims[0]));
}

std::uint64_t tensor_spec::bytes() const { return row_bytes() * static_cast<std::uint64_t>(rows()); }

std::vector<std::byte> encode_header(const metadata& kv, const std::vector<tensor_spec>& tensors,
                                     std::uint64_t alignment) {
  std::vector<std::byte> out;
  const char magic[4] = {'G', 'G', 'U', 'F'};
  for (char c : magic) out.push_back(static_cast<std::byte>(c));
  encode_pod<std::uint32_t>(out, 3);
  encode_pod<std::uint64_t>(out, tensors.size());
  encode_pod<std::uint64_t>(out, kv.size());
  for (const auto& [key, v] : kv) {
    encode_string(out, key);
    encode_pod(out, static_cast<std::uint32_t>(v.type));
    encode(out, v);
  }
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.dims.empty() || t.dims.size() > max_dims) {
      throw std::invalid_argument("gguf: tensor " + t.name + " has " + std::to_string(t.dims.size()) + " dimensions");
    }
    for (auto d : t.dims) {
      if (d < 1) throw std::invalid_argument("gguf: tensor " + t.name + " has a dimension " + std::to_string(d));
    }
    encode_string(out, t.name);
    encode_pod<std::uint32_t>(out, static_cast<std::uint32_t>(t.dims.size()));
    for (auto d : t.dims) encode_pod<std::uint64_t>(out, static_cast<std::uint64_t>(d));
    encode_pod(out, static_cast<std::uint32_t>(t.type));
    encode_pod<std::uint64_t>(out, offset);
    offset = align_up(offset + t.bytes(), alignment);
  }
  out.resize(align_up(out.size(), alignment), std::byte{0});
  return out;
}

}  // namespace gguf
