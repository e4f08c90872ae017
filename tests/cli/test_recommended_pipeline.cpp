// The default pipeline is the evidence's: README.md's table of what `nashprune
// prune` runs by default, against the alternatives measured the same way, must
// give the recommended pipeline of each row the lowest perplexity of that row
// and mark it in bold. Changing recommended_pipeline() without new measurements,
// or measurements that show another pipeline best, fail here.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "planning/recommended_pipeline.hpp"

namespace {

namespace np = nashprune;
using nashprune_tool::pipeline_situation;

std::vector<std::string> cells_of(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream in(line.substr(1));
  for (std::string cell; std::getline(in, cell, '|');) {
    const auto first = cell.find_first_not_of(' ');
    const auto last = cell.find_last_not_of(' ');
    cells.push_back(first == std::string::npos ? "" : cell.substr(first, last - first + 1));
  }
  return cells;
}

struct table {
  std::vector<std::string> columns;  // pipeline names, from the second cell on
  std::map<std::string, std::vector<std::string>> rows;
};

// The README table whose header starts with "| target |".
table default_pipeline_table() {
  std::ifstream in(NASHPRUNE_README);
  EXPECT_TRUE(in) << "cannot read " << NASHPRUNE_README;
  table t;
  bool inside = false;
  for (std::string line; std::getline(in, line);) {
    if (!inside) {
      if (line.starts_with("| target |")) {
        const auto header = cells_of(line);
        t.columns.assign(header.begin() + 1, header.end());
        inside = true;
      }
      continue;
    }
    if (!line.starts_with("|")) break;
    if (line.starts_with("|---")) continue;
    auto cells = cells_of(line);
    const auto label = cells.front();
    cells.erase(cells.begin());
    t.rows[label] = cells;
  }
  return t;
}

// "**4.766**" -> 4.766 (bold), "—" -> nothing.
std::optional<double> value_of(const std::string& cell, bool& bold) {
  static const std::regex number(R"((\*\*)?([0-9]+\.[0-9]+)(\*\*)?)");
  std::smatch m;
  bold = false;
  if (!std::regex_match(cell, m, number)) return std::nullopt;
  bold = m[1].matched;
  return std::stod(m[2]);
}

TEST(recommended_pipeline, is_the_best_measured_in_the_readme) {
  const np::structure_set heads{np::structure::heads};
  const np::structure_set groups{np::structure::groups};
  const np::structure_set heads_mlp{np::structure::heads, np::structure::mlp};
  const auto heads_unit = np::budget_unit::heads;
  const auto params_unit = np::budget_unit::parameters;
  const std::map<std::string, pipeline_situation> situations{
      {"25 % of heads, calibrated", {0.25, heads_unit, heads, true}},
      {"50 % of heads, calibrated", {0.5, heads_unit, heads, true}},
      {"25 % of heads as GQA groups, calibrated", {0.25, heads_unit, groups, true}},
      {"40 % of heads as GQA groups, calibrated", {0.4, heads_unit, groups, true}},
      {"50 % of heads as GQA groups, calibrated", {0.5, heads_unit, groups, true}},
      {"20 % of parameters, heads and MLP channels, calibrated", {0.2, params_unit, heads_mlp, true}},
      {"25 % of heads", {0.25, heads_unit, heads, false}},
      {"50 % of heads", {0.5, heads_unit, heads, false}},
      {"25 % of heads as GQA groups", {0.25, heads_unit, groups, false}},
      {"50 % of heads as GQA groups", {0.5, heads_unit, groups, false}},
      {"20 % of parameters, heads and MLP channels", {0.2, params_unit, heads_mlp, false}},
  };
  const auto t = default_pipeline_table();
  ASSERT_FALSE(t.columns.empty()) << "README.md has no table headed '| target |'";
  EXPECT_EQ(t.rows.size(), situations.size()) << "every README row must be a situation this test knows, and the reverse";
  for (const auto& [label, situation] : situations) {
    SCOPED_TRACE(label);
    const auto row = t.rows.find(label);
    ASSERT_NE(row, t.rows.end()) << "README.md's table lacks the row '" << label << "'";
    ASSERT_EQ(row->second.size(), t.columns.size());
    const auto recommended = nashprune_tool::pipeline_name(nashprune_tool::recommended_pipeline(situation));
    std::optional<double> chosen;
    std::optional<double> best_other;
    int alternatives = 0;
    for (std::size_t c = 0; c < t.columns.size(); ++c) {
      bool bold = false;
      const auto value = value_of(row->second[c], bold);
      EXPECT_EQ(bold, t.columns[c] == recommended) << "column '" << t.columns[c] << "': bold marks the recommended pipeline alone";
      if (!value) continue;
      if (t.columns[c] == recommended) {
        chosen = value;
      } else {
        ++alternatives;
        if (!best_other || *value < *best_other) best_other = value;
      }
    }
    ASSERT_TRUE(chosen) << "the recommended pipeline '" << recommended << "' has no measurement in this row";
    ASSERT_GE(alternatives, 1) << "a row with nothing to compare proves nothing";
    EXPECT_LE(*chosen, *best_other) << "'" << recommended << "' is not the best of its row";
  }
}

TEST(recommended_pipeline, names_what_runs) {
  using np::compensation_kind;
  using np::head_game;
  using np::selector;
  using nashprune_tool::score_kind;
  EXPECT_EQ(nashprune_tool::pipeline_name({score_kind::magnitude, head_game::output, selector::greedy, 0.0, compensation_kind::refit}),
            "output game + refit");
  EXPECT_EQ(nashprune_tool::pipeline_name({score_kind::activation, head_game::none, selector::greedy, 0.0, compensation_kind::refit}),
            "activation + refit");
  EXPECT_EQ(nashprune_tool::pipeline_name({score_kind::magnitude, head_game::cosine, selector::exact, 1.0, compensation_kind::none}),
            "magnitude + cosine game (exact), priors 1");
  EXPECT_EQ(nashprune_tool::pipeline_name({score_kind::wanda, head_game::none, selector::greedy, 0.0, compensation_kind::bias}),
            "wanda + bias");
}

}  // namespace
