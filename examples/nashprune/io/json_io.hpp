// Shared JSON reading helpers of the nashprune tool: every malformed field becomes a
// usage_error (exit code 2) whose one-line message names the field by its path,
// e.g. "items[3].cost: expected an integer, got \"12\"".
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "command.hpp"

namespace nashprune_tool::json_io {

using json = nlohmann::json;

/// Writes `doc` (dump(indent)) to standard output when `path` is empty or "-", else
/// beside `path` and renamed onto it, so an interrupted run leaves no partial file.
/// Throws std::runtime_error when the file cannot be written. `Json` is json or
/// nlohmann::ordered_json (keys in the order they were set).
template <typename Json>
void write_document(const std::string& path, const Json& doc, int indent = -1) {
  if (path.empty() || path == "-") {
    std::cout << doc.dump(indent) << '\n';
    return;
  }
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial);
    if (!(out << doc.dump(indent) << '\n')) throw std::runtime_error("cannot write " + partial);
  }
  std::error_code ec;
  std::filesystem::rename(partial, path, ec);
  if (ec) throw std::runtime_error("cannot rename " + partial + " to " + path + ": " + ec.message());
}

/// Parses a JSON document from a file, or from standard input when `path` is "-".
inline json read_document(const std::string& path) {
  std::string text;
  if (path == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw usage_error("input: cannot open '" + path + "'");
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw usage_error("input: not valid JSON (" + std::string(e.what()) + ")");
  }
}

/// "budget.fraction", "items[3]": the path of a child field.
inline std::string child(std::string_view parent, std::string_view key) {
  return parent.empty() ? std::string(key) : std::string(parent) + "." + std::string(key);
}
inline std::string element(std::string_view parent, std::size_t i) { return std::string(parent) + "[" + std::to_string(i) + "]"; }

[[noreturn]] inline void fail(std::string_view path, std::string_view problem) {
  throw usage_error(std::string(path) + ": " + std::string(problem));
}

inline std::string shown(const json& value) {
  std::string s = value.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

inline const json& require_object(const json& value, std::string_view path) {
  if (!value.is_object()) fail(path.empty() ? "input" : path, "expected an object, got " + shown(value));
  return value;
}

inline const json& require_array(const json& value, std::string_view path) {
  if (!value.is_array()) fail(path, "expected an array, got " + shown(value));
  return value;
}

/// The member `key` of an object; a missing member fails naming it.
inline const json& field(const json& object, std::string_view parent, std::string_view key) {
  require_object(object, parent);
  const auto it = object.find(std::string(key));
  if (it == object.end()) fail(child(parent, key), "missing");
  return *it;
}

inline const json* optional_field(const json& object, std::string_view parent, std::string_view key) {
  require_object(object, parent);
  const auto it = object.find(std::string(key));
  return it == object.end() ? nullptr : &*it;
}

/// Fails on members not in `known` (a typo would otherwise be ignored silently).
inline void require_known_fields(const json& object, std::string_view parent, std::initializer_list<std::string_view> known) {
  require_object(object, parent);
  for (const auto& [key, value] : object.items()) {
    bool found = false;
    for (const auto k : known) found = found || k == key;
    if (!found) fail(child(parent, key), "unknown field");
  }
}

inline double as_number(const json& value, std::string_view path) {
  if (!value.is_number()) fail(path, "expected a number, got " + shown(value));
  return value.get<double>();
}

/// An integer (a JSON number with no fractional part, within int64).
inline std::int64_t as_integer(const json& value, std::string_view path) {
  if (value.is_number_integer()) {
    if (value.is_number_unsigned() && value.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      fail(path, "integer out of range");
    }
    return value.get<std::int64_t>();
  }
  if (value.is_number_float()) {
    const double v = value.get<double>();
    if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e18) return static_cast<std::int64_t>(v);
  }
  fail(path, "expected an integer, got " + shown(value));
}

/// An array of numbers.
inline std::vector<double> as_numbers(const json& value, std::string_view path) {
  require_array(value, path);
  std::vector<double> out;
  out.reserve(value.size());
  for (std::size_t i = 0; i < value.size(); ++i) out.push_back(as_number(value[i], element(path, i)));
  return out;
}

inline bool as_bool(const json& value, std::string_view path) {
  if (!value.is_boolean()) fail(path, "expected true or false, got " + shown(value));
  return value.get<bool>();
}

inline std::string as_string(const json& value, std::string_view path) {
  if (!value.is_string()) fail(path, "expected a string, got " + shown(value));
  return value.get<std::string>();
}

}  // namespace nashprune_tool::json_io
