// JSON input for the nashprune subcommands: read a document from a file or
// stdin, and read typed fields with errors that name the field's path
// ("layers[2].redundancy[3][1]: expected a number, got string"), so a user can
// find the bad value. Every error is a usage_error (exit code 2).
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "command.hpp"

namespace nashprune_tool {

/// Parses the JSON document at `path` ("-" or empty: stdin).
[[nodiscard]] inline nlohmann::json read_json_input(const std::string& path) {
  const bool from_stdin = path.empty() || path == "-";
  const std::string name = from_stdin ? std::string("<stdin>") : path;
  std::ifstream file;
  if (!from_stdin) {
    file.open(path, std::ios::binary);
    if (!file) throw usage_error(name + ": cannot open file");
  }
  try {
    return nlohmann::json::parse(from_stdin ? std::cin : file);
  } catch (const nlohmann::json::parse_error& e) {
    throw usage_error(name + ": malformed JSON (" + e.what() + ")");
  }
}

/// "layers[2]" + "redundancy" -> "layers[2].redundancy"; "" + "lambda" -> "lambda".
[[nodiscard]] inline std::string field_path(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

[[nodiscard]] inline std::string index_path(const std::string& parent, std::size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

[[noreturn]] inline void fail_field(const std::string& path, const std::string& problem) {
  throw usage_error("field '" + path + "': " + problem);
}

/// The member `key` of the object `value` (at `parent`), which must exist.
[[nodiscard]] inline const nlohmann::json& require_field(const nlohmann::json& value, const std::string& parent,
                                                         std::string_view key) {
  if (!value.is_object()) fail_field(parent.empty() ? "<document>" : parent, "expected an object");
  const auto it = value.find(key);
  if (it == value.end()) fail_field(field_path(parent, key), "is missing");
  return *it;
}

[[nodiscard]] inline double read_number(const nlohmann::json& value, const std::string& path) {
  if (!value.is_number()) fail_field(path, std::string("expected a number, got ") + value.type_name());
  return value.get<double>();
}

[[nodiscard]] inline const nlohmann::json& require_array(const nlohmann::json& value, const std::string& path) {
  if (!value.is_array()) fail_field(path, std::string("expected an array, got ") + value.type_name());
  return value;
}

/// An array of numbers.
[[nodiscard]] inline Eigen::VectorXd read_vector(const nlohmann::json& value, const std::string& path) {
  const auto& array = require_array(value, path);
  Eigen::VectorXd out(static_cast<Eigen::Index>(array.size()));
  for (std::size_t i = 0; i < array.size(); ++i) out(Eigen::Index(i)) = read_number(array[i], index_path(path, i));
  return out;
}

/// An array of `rows` arrays of `cols` numbers each (row by row).
[[nodiscard]] inline Eigen::MatrixXd read_matrix(const nlohmann::json& value, const std::string& path, std::size_t rows,
                                                 std::size_t cols) {
  const auto& array = require_array(value, path);
  if (array.size() != rows) {
    fail_field(path, "has " + std::to_string(array.size()) + " rows, expected " + std::to_string(rows));
  }
  Eigen::MatrixXd out(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
  for (std::size_t r = 0; r < rows; ++r) {
    const std::string row_path = index_path(path, r);
    const auto& row = require_array(array[r], row_path);
    if (row.size() != cols) {
      fail_field(row_path, "has " + std::to_string(row.size()) + " entries, expected " + std::to_string(cols));
    }
    for (std::size_t c = 0; c < cols; ++c) {
      out(Eigen::Index(r), Eigen::Index(c)) = read_number(row[c], index_path(row_path, c));
    }
  }
  return out;
}

}  // namespace nashprune_tool
