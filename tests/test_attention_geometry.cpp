// Tests for include/nashprune/attention_geometry.hpp.
#include <nashprune/attention_geometry.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <set>

using namespace nashprune;
using ::testing::HasSubstr;

namespace {

// Plain-loop reference: the GQA rules stated in the header, checked head by head.
bool reference_plan_is_valid(std::int64_t n_head, std::int64_t n_kv, const head_keep_plan& plan) {
  const std::int64_t g = n_head / n_kv;
  std::set<std::int64_t> kv(plan.kv_heads.begin(), plan.kv_heads.end());
  std::vector<int> per_kv(static_cast<std::size_t>(n_kv), 0);
  for (auto h : plan.q_heads) {
    if (!kv.count(h / g)) return false;
    ++per_kv[static_cast<std::size_t>(h / g)];
  }
  for (auto j : plan.kv_heads) {
    if (per_kv[static_cast<std::size_t>(j)] != per_kv[static_cast<std::size_t>(plan.kv_heads[0])]) return false;
  }
  // After renumbering, new q head i must read new kv head i / g'.
  if (plan.q_heads.empty()) return plan.kv_heads.empty();
  const std::size_t g2 = plan.q_heads.size() / plan.kv_heads.size();
  for (std::size_t i = 0; i < plan.q_heads.size(); ++i) {
    if (plan.kv_heads[i / g2] != plan.q_heads[i] / g) return false;
  }
  return true;
}

struct shape {
  const char* name;
  std::int64_t n_head, n_kv, head_dim;
};
// MHA, Llama-3 (4:1), Qwen2.5-7B (7:1), stories260K (2:1, head_dim 8), head_dim not a multiple of 32.
const shape shapes[] = {{"mha", 12, 12, 64},      {"llama3_8b", 32, 8, 128}, {"qwen25_7b", 28, 4, 128},
                        {"stories260k", 8, 4, 8}, {"odd_dim", 6, 3, 80},     {"mqa", 8, 1, 24}};

}  // namespace

TEST(AttentionGeometry, MappingFollowsLlamaCppConvention) {
  for (const auto& s : shapes) {
    attention_geometry geom(s.n_head, s.n_kv, s.head_dim);
    const std::int64_t g = s.n_head / s.n_kv;
    EXPECT_EQ(geom.group_size(), g) << s.name;
    for (std::int64_t h = 0; h < s.n_head; ++h) {
      EXPECT_EQ(geom.kv_head_of(h), h / g) << s.name;
      const auto r = geom.q_heads_of_group(h / g);
      EXPECT_TRUE(h >= r.begin && h < r.end()) << s.name;
    }
  }
}

TEST(AttentionGeometry, SpansTileEachTensorExactly) {
  for (const auto& s : shapes) {
    attention_geometry geom(s.n_head, s.n_kv, s.head_dim, s.head_dim + 16);
    for (auto role : {tensor_role::q, tensor_role::k, tensor_role::v, tensor_role::o}) {
      const bool query_side = role == tensor_role::q || role == tensor_role::o;
      const std::int64_t heads = query_side ? s.n_head : s.n_kv;
      const std::int64_t unit = (role == tensor_role::q || role == tensor_role::k) ? s.head_dim : s.head_dim + 16;
      EXPECT_EQ(geom.extent(role), heads * unit);
      std::int64_t next = 0;
      for (std::int64_t h = 0; h < heads; ++h) {
        const auto span = geom.head_span(role, h);
        EXPECT_EQ(span.begin, next) << s.name;
        EXPECT_EQ(span.size, unit);
        next = span.end();
      }
      EXPECT_EQ(next, geom.extent(role));
      next = 0;
      for (std::int64_t j = 0; j < s.n_kv; ++j) {
        const auto span = geom.group_span(role, j);
        EXPECT_EQ(span.begin, next);
        next = span.end();
      }
      EXPECT_EQ(next, geom.extent(role));
    }
  }
}

TEST(AttentionGeometry, StructureAxisForBothOrientations) {
  using enum tensor_role;
  for (auto role : {q, k, v, gate, up}) {
    EXPECT_EQ(structure_axis(role, matrix_orientation::out_by_in), matrix_axis::rows);
    EXPECT_EQ(structure_axis(role, matrix_orientation::in_by_out), matrix_axis::cols);
  }
  for (auto role : {o, down}) {
    EXPECT_EQ(structure_axis(role, matrix_orientation::out_by_in), matrix_axis::cols);
    EXPECT_EQ(structure_axis(role, matrix_orientation::in_by_out), matrix_axis::rows);
  }
}

TEST(AttentionGeometry, RejectsBadShapes) {
  EXPECT_THROW(attention_geometry(32, 6, 128), std::invalid_argument);
  EXPECT_THROW(attention_geometry(0, 1, 128), std::invalid_argument);
  EXPECT_THROW(attention_geometry(8, 0, 128), std::invalid_argument);
  EXPECT_THROW(attention_geometry(8, 4, 0), std::invalid_argument);
  EXPECT_THROW(attention_geometry(8, 4, 8, -1), std::invalid_argument);
  try {
    attention_geometry(32, 6, 128);
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("'n_head_kv'"));
  }
  attention_geometry geom(8, 4, 8);
  EXPECT_THROW((void)geom.kv_head_of(8), std::invalid_argument);
  EXPECT_THROW((void)geom.head_span(tensor_role::k, 4), std::invalid_argument);
  EXPECT_THROW((void)geom.head_span(tensor_role::gate, 0), std::invalid_argument);
}

TEST(AttentionGeometry, ValidateNamesTheOffendingEntry) {
  attention_geometry geom(8, 4, 8);
  auto expect_error = [&](head_keep_plan plan, const char* needle) {
    try {
      (void)geom.validate(plan);
      ADD_FAILURE() << "expected an error containing " << needle;
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), HasSubstr(needle));
    }
  };
  expect_error({{0, 1, 8}, {0}}, "index 2");                    // out of range
  expect_error({{0, 0}, {0}}, "duplicate value 0 at index 1");  // duplicate
  expect_error({{1, 0}, {0}}, "not in ascending order");
  expect_error({{0, 1, 2}, {0}}, "reads kv head 1");            // kv head removed
  expect_error({{0, 1, 2}, {0, 1}}, "keeps 1 q heads");         // unequal groups
  expect_error({{}, {}}, "layer left empty");
  expect_error({{}, {1}}, "'plan.kv_heads'");
  EXPECT_EQ(geom.validate({{}, {}}, /*allow_empty=*/true), (head_counts{0, 0}));
  EXPECT_EQ(geom.validate({{0, 2, 6}, {0, 1, 3}}), (head_counts{3, 3}));
  EXPECT_EQ(geom.validate({{2, 3, 6, 7}, {1, 3}}), (head_counts{4, 2}));
}

TEST(AttentionGeometry, PlanRemovingEachGranularity) {
  attention_geometry gqa(8, 4, 8);
  const std::vector<std::int64_t> groups{2, 0};
  auto plan = gqa.plan_removing(head_granularity::whole_groups, groups);
  EXPECT_EQ(plan.kv_heads, (std::vector<std::int64_t>{1, 3}));
  EXPECT_EQ(plan.q_heads, (std::vector<std::int64_t>{2, 3, 6, 7}));
  EXPECT_EQ(gqa.kept_ranges(plan, tensor_role::q), (std::vector<index_range>{{16, 16}, {48, 16}}));
  EXPECT_EQ(gqa.kept_ranges(plan, tensor_role::k), (std::vector<index_range>{{8, 8}, {24, 8}}));

  const std::vector<std::int64_t> heads{1, 2, 5, 6};
  plan = gqa.plan_removing(head_granularity::heads_per_group, heads);
  EXPECT_EQ(plan.q_heads, (std::vector<std::int64_t>{0, 3, 4, 7}));
  EXPECT_EQ(plan.kv_heads, (std::vector<std::int64_t>{0, 1, 2, 3}));

  const std::vector<std::int64_t> uneven{0, 1, 2};
  EXPECT_THROW((void)gqa.plan_removing(head_granularity::heads_per_group, uneven), std::invalid_argument);
  EXPECT_THROW((void)gqa.plan_removing(head_granularity::single_heads, heads), std::invalid_argument);
  const std::vector<std::int64_t> duplicate{1, 1};
  EXPECT_THROW((void)gqa.plan_removing(head_granularity::whole_groups, duplicate), std::invalid_argument);
  const std::vector<std::int64_t> everything{0, 1, 2, 3};
  EXPECT_THROW((void)gqa.plan_removing(head_granularity::whole_groups, everything), std::invalid_argument);
  EXPECT_TRUE(gqa.plan_removing(head_granularity::whole_groups, everything, true).q_heads.empty());

  attention_geometry mha(6, 6, 10);
  const std::vector<std::int64_t> some{4, 1};
  plan = mha.plan_removing(head_granularity::single_heads, some);
  EXPECT_EQ(plan.q_heads, (std::vector<std::int64_t>{0, 2, 3, 5}));
  EXPECT_EQ(plan.kv_heads, plan.q_heads);
}

TEST(AttentionGeometry, PlanByScoresMatchesExhaustiveChoice) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (const auto& s : shapes) {
    attention_geometry geom(s.n_head, s.n_kv, s.head_dim);
    for (auto granularity : {head_granularity::whole_groups, head_granularity::heads_per_group,
                             head_granularity::single_heads}) {
      if (granularity == head_granularity::single_heads && !geom.is_multi_head()) {
        EXPECT_THROW((void)geom.removable_q_head_counts(granularity), std::invalid_argument);
        continue;
      }
      Eigen::VectorXd scores(s.n_head);
      for (auto& x : scores) x = u(rng);
      for (const std::int64_t count : geom.removable_q_head_counts(granularity)) {
        const auto plan = geom.plan_by_scores(granularity, scores, count, /*allow_empty=*/true);
        EXPECT_EQ(static_cast<std::int64_t>(plan.q_heads.size()), s.n_head - count);
        EXPECT_TRUE(reference_plan_is_valid(s.n_head, s.n_kv, plan)) << s.name;
        // Optimality within the granularity: kept score is the best reachable. Reference:
        // whole groups -> the groups kept have the largest sums; per group -> in each group
        // every kept head outscores every removed one.
        std::set<std::int64_t> kept(plan.q_heads.begin(), plan.q_heads.end());
        const std::int64_t g = geom.group_size();
        if (granularity == head_granularity::whole_groups) {
          for (std::int64_t a = 0; a < s.n_kv; ++a) {
            for (std::int64_t b = 0; b < s.n_kv; ++b) {
              if (kept.count(a * g) && !kept.count(b * g)) {
                EXPECT_GE(scores.segment(a * g, g).sum(), scores.segment(b * g, g).sum());
              }
            }
          }
        } else {
          const std::int64_t pool = granularity == head_granularity::heads_per_group ? g : s.n_head;
          for (std::int64_t a = 0; a < s.n_head; ++a) {
            for (std::int64_t b = 0; b < s.n_head; ++b) {
              if (a / pool == b / pool && kept.count(a) && !kept.count(b)) {
                EXPECT_GE(scores(a), scores(b));
              }
            }
          }
        }
      }
    }
  }
}

TEST(AttentionGeometry, PlanByScoresRejectsBadInput) {
  attention_geometry geom(8, 4, 8);
  Eigen::VectorXd scores = Eigen::VectorXd::Ones(8);
  EXPECT_THROW((void)geom.plan_by_scores(head_granularity::whole_groups, scores, 3), std::invalid_argument);
  EXPECT_THROW((void)geom.plan_by_scores(head_granularity::heads_per_group, scores, 2), std::invalid_argument);
  EXPECT_THROW((void)geom.plan_by_scores(head_granularity::whole_groups, Eigen::VectorXd::Ones(7), 2),
               std::invalid_argument);
  scores(5) = std::numeric_limits<double>::infinity();
  try {
    (void)geom.plan_by_scores(head_granularity::whole_groups, scores, 2);
    ADD_FAILURE();
  } catch (const std::domain_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("index 5"));
  }
  // Ties: equal scores remove the lowest index first.
  const auto plan = geom.plan_by_scores(head_granularity::whole_groups, Eigen::VectorXd::Ones(8), 4);
  EXPECT_EQ(plan.kv_heads, (std::vector<std::int64_t>{2, 3}));
}

TEST(AttentionGeometry, KeepListsAndRanges) {
  const std::vector<std::int64_t> keep{0, 1, 3, 4, 5, 9};
  EXPECT_NO_THROW(validate_keep_list("keep", keep, 10));
  EXPECT_THROW(validate_keep_list("keep", keep, 9), std::invalid_argument);
  EXPECT_THROW(validate_keep_list("keep", std::vector<std::int64_t>{}, 9), std::invalid_argument);
  EXPECT_NO_THROW(validate_keep_list("keep", std::vector<std::int64_t>{}, 9, true));
  EXPECT_THROW(validate_keep_list("keep", std::vector<std::int64_t>{2, 2}, 9), std::invalid_argument);
  EXPECT_EQ(unit_ranges(keep, 4), (std::vector<index_range>{{0, 8}, {12, 12}, {36, 4}}));
  EXPECT_EQ(complement_units(keep, 10), (std::vector<std::int64_t>{2, 6, 7, 8}));
}
