// nashprune/detail/validate.hpp — argument checks used at every public boundary.
//
// Not part of the public API. Every message starts with "nashprune: argument
// '<name>'" and, where the problem sits at a position, names that position, so a
// caller can find the bad value without a debugger. Invalid shapes, sizes and
// options throw std::invalid_argument; values outside a function's domain (NaN,
// Inf, negative sums of squares, zero counts) throw std::domain_error.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>

#include "../config.hpp"

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

[[nodiscard]] inline std::string argument_message(std::string_view argument,
                                                  std::string_view problem) {
  std::string message = "nashprune: argument '";
  message.append(argument);
  message.append("': ");
  message.append(problem);
  return message;
}

[[noreturn]] inline void fail_argument(std::string_view argument, std::string_view problem) {
  NASHPRUNE_THROW(std::invalid_argument(argument_message(argument, problem)));
}

[[noreturn]] inline void fail_domain(std::string_view argument, std::string_view problem) {
  NASHPRUNE_THROW(std::domain_error(argument_message(argument, problem)));
}

/// "index 7", for messages about one position of a vector-like argument.
[[nodiscard]] inline std::string at_index(std::int64_t index) {
  return "index " + std::to_string(index);
}

/// "row 3, column 5", for messages about one entry of a matrix argument.
[[nodiscard]] inline std::string at_entry(std::int64_t row, std::int64_t column) {
  return "row " + std::to_string(row) + ", column " + std::to_string(column);
}

inline void require(bool condition, std::string_view argument, std::string_view problem) {
  if (!condition) fail_argument(argument, problem);
}

inline void require_size(std::string_view argument, std::int64_t actual, std::int64_t expected,
                         std::string_view what = "size") {
  if (actual != expected) {
    fail_argument(argument, std::string(what) + " is " + std::to_string(actual) + ", expected " +
                                std::to_string(expected));
  }
}

template <typename Scalar>
[[nodiscard]] std::string describe_value(Scalar value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Six significant digits: a fixed six decimals would show a small value as 0.000000.
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", static_cast<double>(value));
  return text;
}

/// Throws std::domain_error naming the first non-finite entry (row, column order
/// of the expression's own storage, so a row-major map is scanned row by row).
template <typename Derived>
void require_finite(std::string_view argument, const Eigen::DenseBase<Derived>& values) {
  const auto& m = values.derived();
  const bool row_major = Derived::IsRowMajor;
  const Eigen::Index outer = row_major ? m.rows() : m.cols();
  const Eigen::Index inner = row_major ? m.cols() : m.rows();
  for (Eigen::Index o = 0; o < outer; ++o) {
    for (Eigen::Index i = 0; i < inner; ++i) {
      const Eigen::Index r = row_major ? o : i;
      const Eigen::Index c = row_major ? i : o;
      const auto v = m.coeff(r, c);
      if (!std::isfinite(v)) {
        const std::string where = (m.cols() == 1)   ? at_index(r)
                                  : (m.rows() == 1) ? at_index(c)
                                                    : at_entry(r, c);
        fail_domain(argument, "non-finite value " + describe_value(v) + " at " + where);
      }
    }
  }
}

/// Throws std::domain_error naming the first entry that is negative or non-finite.
template <typename Derived>
void require_finite_nonnegative(std::string_view argument, const Eigen::DenseBase<Derived>& values) {
  require_finite(argument, values);
  const auto& m = values.derived();
  for (Eigen::Index c = 0; c < m.cols(); ++c) {
    for (Eigen::Index r = 0; r < m.rows(); ++r) {
      if (m.coeff(r, c) < 0) {
        const std::string where = (m.cols() == 1)   ? at_index(r)
                                  : (m.rows() == 1) ? at_index(c)
                                                    : at_entry(r, c);
        fail_domain(argument, "negative value " + describe_value(m.coeff(r, c)) + " at " + where);
      }
    }
  }
}

/// Whether token (row) `token` of a tokens × (n_head · head_dim) activation
/// block holds only finite values. If it does not and `throw_if_not`, throws
/// std::domain_error naming the token, the first bad column and its head.
template <typename Derived>
[[nodiscard]] bool token_is_finite(std::string_view argument, const Eigen::DenseBase<Derived>& x,
                                   Eigen::Index token, Eigen::Index head_dim, bool throw_if_not) {
  const auto& m = x.derived();
  Eigen::Index column = 0;
  while (column < m.cols() && std::isfinite(m.coeff(token, column))) ++column;
  if (column == m.cols()) return true;
  if (throw_if_not) {
    fail_domain(argument, "non-finite value " + describe_value(m.coeff(token, column)) +
                              " at token " + std::to_string(token) + ", column " +
                              std::to_string(column) + " (head " +
                              std::to_string(column / head_dim) + ")");
  }
  return false;
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
