// Tests of nashprune/count_search.hpp: on random step functions the search returns
// what a brute-force scan of every count the range offers says it must (at_most
// and nearest, linear and logarithmic, from the ends and from a start point), keeps
// its evaluation budget, warm-starts only from evaluated points, and names every
// bad argument.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <nashprune/count_search.hpp>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

#include "expect_error.hpp"

namespace {

namespace np = nashprune;
using nashprune_test::expect_error;

/// Options over [low, high] with the defaults otherwise; the tests then set what they vary.
template <typename Scalar = double>
np::count_search_options<Scalar> over(Scalar low, Scalar high) {
  np::count_search_options<Scalar> o;
  o.low = low;
  o.high = high;
  return o;
}

template <typename Scalar = double>
np::count_search_options<Scalar> with(np::count_search_options<Scalar> o, auto&& change) {
  change(o);
  return o;
}

/// What an evaluation returns: the parameter, its count, and an identity so that a
/// warm start can be checked to come from an evaluated point.
struct evaluated {
  double at = 0;
  std::int64_t count = 0;
  std::int64_t id = -1;
};

/// count(t) = number of breakpoints <= t, or any caller-given function of t.
struct step_function {
  std::vector<double> breakpoints;
  std::int64_t operator()(double t) const {
    std::int64_t c = 0;
    for (const double b : breakpoints) c += b <= t ? 1 : 0;
    return c;
  }
};

/// Every count the range [low, high] offers (plain loop over the breakpoints).
std::set<std::int64_t> achievable(const step_function& f, double low, double high) {
  std::set<std::int64_t> counts{f(low), f(high)};
  for (const double b : f.breakpoints) {
    if (b >= low && b <= high) counts.insert(f(b));
  }
  return counts;
}

/// The largest achievable count <= requested (a budget), or the smallest count when all exceed it.
std::int64_t brute_at_most(const std::set<std::int64_t>& counts, std::int64_t requested) {
  std::int64_t best = -1;
  for (const auto c : counts) {
    if (c <= requested) best = std::max(best, c);
  }
  return best >= 0 ? best : *counts.begin();
}

/// The achievable count nearest to requested, ties to the smaller.
std::int64_t brute_nearest(const std::set<std::int64_t>& counts, std::int64_t requested) {
  std::int64_t best = *counts.begin();
  for (const auto c : counts) {
    if (std::llabs(c - requested) < std::llabs(best - requested)) best = c;
  }
  return best;
}

/// Runs the search on `count`, recording the evaluations and checking every warm start.
template <typename Count>
np::count_search_result<double, evaluated> run(const Count& count, std::int64_t requested, const np::count_search_options<double>& options,
                                               std::vector<evaluated>& log) {
  log.clear();
  const auto evaluate = [&](double at, const evaluated* warm) {
    if (log.empty()) {
      EXPECT_EQ(warm, nullptr) << "the first evaluation has nothing to start from";
    } else {
      EXPECT_NE(warm, nullptr) << "evaluation " << log.size() << " is not warm-started";
      if (warm != nullptr) {
        EXPECT_TRUE(warm->id >= 0 && warm->id < static_cast<std::int64_t>(log.size()) && log[static_cast<std::size_t>(warm->id)].at == warm->at)
            << "warm start from a point never evaluated";
      }
    }
    EXPECT_GE(at, options.low);
    EXPECT_LE(at, options.high);
    evaluated e{at, count(at), static_cast<std::int64_t>(log.size())};
    log.push_back(e);
    return e;
  };
  return np::search_count(requested, options, evaluate, [](const evaluated& e) { return e.count; });
}

step_function random_steps(std::mt19937& rng, int n, double low, double high, bool logarithmic) {
  // Breakpoints on a grid 1e-3 of the range (or of a decade) apart, so the search's
  // closing width (1e-9 relative) never has to separate two of them.
  step_function f;
  std::uniform_int_distribution<int> cell(0, 999);
  for (int k = 0; k < n; ++k) {
    const double u = (cell(rng) + 0.5) / 1000.0;
    f.breakpoints.push_back(logarithmic ? low * std::pow(high / low, u) : low + (high - low) * u);
  }
  return f;
}

TEST(CountSearch, LinearAtMostMatchesBruteForceOnRandomSteps) {
  std::mt19937 rng(17);
  std::vector<evaluated> log;
  for (int trial = 0; trial < 400; ++trial) {
    const double high = std::uniform_real_distribution<double>(0.5, 50.0)(rng);
    const int n = std::uniform_int_distribution<int>(0, 12)(rng);
    const step_function f = random_steps(rng, n, 0.0, high, false);
    const auto counts = achievable(f, 0.0, high);
    for (std::int64_t requested = 0; requested <= n + 1; ++requested) {
      const auto options = over(0.0, high);
      const auto r = run(f, requested, options, log);
      EXPECT_EQ(r.best().count, brute_at_most(counts, requested)) << "trial " << trial << ", requested " << requested;
      EXPECT_EQ(r.best().count, f(r.best().at));
      EXPECT_EQ(r.evaluations, static_cast<std::int64_t>(log.size()));
      EXPECT_LE(r.evaluations, options.max_evaluations);
    }
  }
}

TEST(CountSearch, LowestFindsTheFirstParameterReachingTheCount) {
  std::mt19937 rng(29);
  std::vector<evaluated> log;
  for (int trial = 0; trial < 200; ++trial) {
    const double high = std::uniform_real_distribution<double>(0.5, 50.0)(rng);
    const int n = std::uniform_int_distribution<int>(1, 10)(rng);
    const step_function f = random_steps(rng, n, 0.0, high, false);
    std::vector<double> sorted = f.breakpoints;
    std::sort(sorted.begin(), sorted.end());
    for (std::int64_t requested = 1; requested <= n; ++requested) {
      // The smallest t with count(t) >= requested is the requested-th breakpoint.
      const double first = sorted[static_cast<std::size_t>(requested - 1)];
      const auto options = with(over(0.0, high), [](auto& o) { o.lowest = true; });
      const auto r = run(f, requested, options, log);
      if (f(first) != requested) {
        // Coinciding breakpoints jump over the request: the budget keeps the count below it.
        EXPECT_EQ(r.best().count, brute_at_most(achievable(f, 0.0, high), requested));
        continue;
      }
      ASSERT_EQ(r.best().count, requested) << "trial " << trial;
      EXPECT_GE(r.best().at, first);
      EXPECT_LE(r.best().at - first, 2e-9 * high) << "trial " << trial << ", requested " << requested;
      // Without `lowest` the search stops at the first hit, never below this one.
      const auto plain = run(f, requested, over(0.0, high), log);
      EXPECT_EQ(plain.best().count, requested);
      EXPECT_GE(plain.best().at, r.best().at);
    }
  }
}

TEST(CountSearch, LogarithmicNearestFromAStartMatchesBruteForce) {
  std::mt19937 rng(41);
  std::vector<evaluated> log;
  const double low = 1e-6, high = 1e6;
  for (int trial = 0; trial < 300; ++trial) {
    const int n = std::uniform_int_distribution<int>(0, 12)(rng);
    const step_function f = random_steps(rng, n, 1e-3, 1e3, true);
    const auto counts = achievable(f, low, high);
    const double start = low * std::pow(high / low, std::uniform_real_distribution<double>(0.0, 1.0)(rng));
    for (std::int64_t requested = 0; requested <= n + 1; ++requested) {
      const auto options = with(over(low, high), [&](auto& o) {
        o.start = start;
        o.scale = np::search_scale::logarithmic;
        o.goal = np::count_goal::nearest;
      });
      const auto r = run(f, requested, options, log);
      EXPECT_EQ(r.best().count, brute_nearest(counts, requested)) << "trial " << trial << ", requested " << requested;
      EXPECT_EQ(log.front().at, start);
      EXPECT_LE(r.evaluations, options.max_evaluations);
      // The bracket the caller reads for reachability: an end of the range when the request lies beyond it.
      if (requested < *counts.begin()) {
        EXPECT_EQ(r.lo.at, low);
      }
      if (requested > *counts.rbegin()) {
        EXPECT_EQ(r.hi.at, high);
      }
    }
  }
}

TEST(CountSearch, NonMonotoneCountsKeepTheInvariantsAndTheBudget) {
  std::mt19937 rng(53);
  std::vector<evaluated> log;
  for (int trial = 0; trial < 300; ++trial) {
    // A count that jumps up and down: a random table over 64 cells of [0, 1].
    std::vector<std::int64_t> table(64);
    for (auto& c : table) c = std::uniform_int_distribution<std::int64_t>(0, 8)(rng);
    const auto count = [&](double t) { return table[std::min<std::size_t>(63, static_cast<std::size_t>(t * 64))]; };
    const std::int64_t budget = std::uniform_int_distribution<std::int64_t>(1, 12)(rng);
    for (std::int64_t requested = 0; requested <= 9; ++requested) {
      for (const auto goal : {np::count_goal::at_most, np::count_goal::nearest}) {
        const auto options = with(over(0.0, 1.0), [&](auto& o) {
          o.goal = goal;
          o.max_evaluations = budget;
        });
        const auto r = run(count, requested, options, log);
        EXPECT_LE(r.evaluations, budget);
        EXPECT_EQ(r.evaluations, static_cast<std::int64_t>(log.size()));
        EXPECT_LE(r.lo.at, r.hi.at);
        bool seen = false;
        for (const auto& e : log) seen = seen || (e.at == r.best().at && e.count == r.best().count);
        EXPECT_TRUE(seen) << "the result is an evaluated point";
        if (goal == np::count_goal::at_most && r.best().count > requested) {
          EXPECT_EQ(r.best().at, 0.0) << "only the range's low end may exceed a budget";
        }
        if (r.lo.count == requested || r.hi.count == requested) {
          EXPECT_EQ(r.best().count, requested);
        }
      }
    }
  }
}

TEST(CountSearch, BadArgumentsAreNamed) {
  const auto count = [](double t) { return static_cast<std::int64_t>(t); };
  std::vector<evaluated> log;
  const auto search = [&](std::int64_t requested, np::count_search_options<double> options) {
    return np::search_count(requested, options, [&](double at, const evaluated*) { return evaluated{at, count(at), 0}; },
                            [](const evaluated& e) { return e.count; });
  };
  expect_error<std::invalid_argument>([&] { (void)search(-1, over(0.0, 1.0)); }, {"requested", "-1"});
  expect_error<std::invalid_argument>([&] { (void)search(1, over(2.0, 1.0)); }, {"options.low"});
  expect_error<std::invalid_argument>([&] { (void)search(1, over(0.0, std::nan(""))); }, {"options.low", "NaN"});
  expect_error<std::invalid_argument>([&] { (void)search(1, with(over(0.0, 1.0), [](auto& o) { o.scale = np::search_scale::logarithmic; })); },
                                      {"options.low", "logarithmic"});
  expect_error<std::invalid_argument>([&] { (void)search(1, with(over(1.0, 2.0), [](auto& o) { o.start = 3.0; })); }, {"options.start"});
  expect_error<std::invalid_argument>([&] { (void)search(1, with(over(0.0, 1.0), [](auto& o) { o.max_evaluations = 0; })); }, {"options.max_evaluations"});
}

TEST(CountSearch, AFloatSearchClosesItsBracket) {
  // In float the closing widths (1e-9 relative, 64 ulp) lie below the type's
  // resolution; the search still ends within its budget.
  const auto count = [](float t) { return t >= 0.3f ? std::int64_t{2} : std::int64_t{0}; };
  const auto options = with(over(0.0f, 1.0f), [](auto& o) { o.max_evaluations = 1000; });
  const auto r = np::search_count(std::int64_t{1}, options, [&](float at, const std::int64_t*) { return count(at); },
                                  [](std::int64_t c) { return c; });
  EXPECT_EQ(r.best().count, 0);
  EXPECT_LT(r.evaluations, 1000);
  EXPECT_NEAR(r.hi.at, 0.3f, 1e-6f);
}

}  // namespace
