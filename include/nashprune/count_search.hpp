// nashprune/count_search.hpp — finding the parameter at which a step count reaches
// a requested value: the one search behind the λ search (lambda_search.hpp), the
// output-perturbation price (output_perturbation.hpp) and the loss price
// (loss_interaction.hpp).
//
// Each of those solves a family of games indexed by one parameter t (the redundancy
// weight λ, or the price μ a kept head costs) and counts what the GQA-consistent
// plans of the equilibrium remove: count(t), a step function that grows with t in
// typical games (not in every game). The search looks for t with
// count(t) = requested:
//
//  1. Bracket. Either from the ends of [low, high] (evaluate low, then high), or
//     outward from a start point by doubling t until count(t) >= requested and then
//     halving until count(t) <= requested, never leaving [low, high]. Afterwards
//     lo.count < requested <= hi.count, unless an end of the range or the
//     evaluation budget stopped it.
//  2. Bisect the bracket at its midpoint, arithmetic (linear scale) or geometric
//     (logarithmic scale, for a parameter spanning decades such as λ), keeping the
//     invariant, until the count is hit (or, with `lowest`, on past the hit to the
//     lowest t that reaches it), the budget is spent or the bracket closes: a width
//     of 1e-9 of hi (linear), a ratio within 64 ulp of 1 (logarithmic), or ends so
//     close that no Scalar lies between them (float, below those widths).
//  3. Pick. at_most (a budget: never more than requested): hi when its count is at
//     most the request, else lo. nearest: the endpoint that hits the count, else the
//     one whose count is nearer, ties to lo (removing less).
//
// For a non-decreasing count the bisection converges on the jump that straddles
// the request, so at_most returns the largest count <= requested that any t in
// range gives (up to the bracket's width and the budget) and nearest the count
// nearest to it. Every evaluation but the first is warm-started from an evaluated
// neighbour: the lower end of the bracket, or the upper one while halving.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "config.hpp"
#include "detail/validate.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// Where the bisection splits a bracket [lo, hi]: (lo + hi) / 2, or √(lo·hi).
enum class search_scale { linear, logarithmic };

/// Which count the search settles for when the request is not hit exactly.
enum class count_goal { at_most, nearest };

template <typename Scalar>
struct count_search_options {
  Scalar low = 0;                      ///< the parameter never leaves [low, high]
  Scalar high = 0;
  std::optional<Scalar> start;         ///< bracket outward from here; none: from low and high
  search_scale scale = search_scale::linear;
  count_goal goal = count_goal::at_most;
  std::int64_t max_evaluations = 200;  ///< evaluations of count(t) at most
  bool lowest = false;                 ///< after a hit, bisect on to the lowest t that reaches the count
};

/// One evaluated parameter: t, its count and what the caller's evaluation returned.
template <typename Scalar, typename Point>
struct count_probe {
  Scalar at = 0;
  std::int64_t count = 0;
  Point point{};
};

template <typename Scalar, typename Point>
struct count_search_result {
  count_probe<Scalar, Point> lo, hi;  ///< the final bracket (equal when the search stopped at its first point)
  bool picked_hi = false;             ///< the pick of the header comment
  std::int64_t evaluations = 0;

  [[nodiscard]] count_probe<Scalar, Point>& best() { return picked_hi ? hi : lo; }
  [[nodiscard]] const count_probe<Scalar, Point>& best() const { return picked_hi ? hi : lo; }
};

namespace detail {

template <typename Scalar>
void validate_count_search(const count_search_options<Scalar>& options, std::int64_t requested) {
  require(requested >= 0, "requested", "must be >= 0, got " + std::to_string(requested));
  if (!(std::isfinite(options.low) && std::isfinite(options.high) && options.low <= options.high)) {
    fail_argument("options.low", "need finite low <= high, got [" + describe_value(options.low) + ", " + describe_value(options.high) + "]");
  }
  if (options.scale == search_scale::logarithmic && !(options.low > 0)) {
    fail_argument("options.low", "a logarithmic search needs low > 0, got " + describe_value(options.low));
  }
  if (options.start && !(*options.start >= options.low && *options.start <= options.high)) {
    fail_argument("options.start", describe_value(*options.start) + " lies outside [low, high]");
  }
  require(options.max_evaluations > 0, "options.max_evaluations", "must be > 0");
}

}  // namespace detail

/// The search of the header comment. `evaluate(t, warm)` returns a Point for the
/// parameter t, starting its solver from `warm` (an evaluated neighbour, or null
/// for the first evaluation); `count_of(point)` is what that point removes.
template <typename Scalar, typename Evaluate, typename CountOf,
          typename Point = std::decay_t<std::invoke_result_t<const Evaluate&, Scalar, std::nullptr_t>>>
[[nodiscard]] count_search_result<Scalar, Point> search_count(std::int64_t requested, const count_search_options<Scalar>& options,
                                                              const Evaluate& evaluate, const CountOf& count_of) {
  detail::validate_count_search(options, requested);
  using probe = count_probe<Scalar, Point>;
  count_search_result<Scalar, Point> r;
  const auto run = [&](Scalar at, const probe* warm) {
    ++r.evaluations;
    probe p{at, 0, evaluate(at, warm ? &warm->point : static_cast<const Point*>(nullptr))};
    p.count = count_of(p.point);
    return p;
  };
  const auto budget_left = [&] { return r.evaluations < options.max_evaluations; };
  probe lo = run(options.start.value_or(options.low), nullptr);
  probe hi = lo;
  if (options.start) {
    while (hi.count < requested && hi.at < options.high && budget_left()) {
      lo = std::move(hi);
      hi = run(std::min(options.high, lo.at * Scalar(2)), &lo);
    }
    if (hi.count >= requested) {
      while (lo.count > requested && lo.at > options.low && budget_left()) {
        hi = std::move(lo);
        lo = run(std::max(options.low, hi.at / Scalar(2)), &hi);
      }
    }
  } else if (lo.count < requested && budget_left()) {
    hi = run(options.high, &lo);
  }
  const auto open = [&] {
    return options.scale == search_scale::linear ? hi.at - lo.at > Scalar(1e-9) * hi.at
                                                 : hi.at > lo.at * (Scalar(1) + Scalar(64) * std::numeric_limits<Scalar>::epsilon());
  };
  while (lo.count < requested && hi.count >= requested && (options.lowest || hi.count > requested) && budget_left() && open()) {
    const Scalar mid = options.scale == search_scale::linear ? (lo.at + hi.at) / Scalar(2) : std::sqrt(lo.at * hi.at);
    if (!(mid > lo.at && mid < hi.at)) break;  // adjacent in Scalar: the bracket cannot shrink
    probe m = run(mid, &lo);
    if (m.count < requested) {
      lo = std::move(m);
    } else {
      hi = std::move(m);
    }
  }
  if (options.goal == count_goal::at_most) {
    r.picked_hi = hi.count <= requested;
  } else if (lo.count == requested) {
    r.picked_hi = false;
  } else if (hi.count == requested) {
    r.picked_hi = true;
  } else {
    r.picked_hi = requested - lo.count > std::abs(hi.count - requested);
  }
  r.lo = std::move(lo);
  r.hi = std::move(hi);
  return r;
}

NASHPRUNE_END_NAMESPACE
