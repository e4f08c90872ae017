// Tests for examples/report: the HTML page of a pruning run (html_report.hpp) and
// the report filled from a real model and plan (prune_report.hpp).
#include <report/html_report.hpp>
#include <report/prune_report.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>
#include <string>

#include "expect_error.hpp"
#include "gguf_test_files.hpp"

namespace {

using nashprune_test::expect_error;
using ::testing::HasSubstr;
using ::testing::Not;

std::size_t count(const std::string& text, const std::string& fragment) {
  std::size_t n = 0;
  for (auto at = text.find(fragment); at != std::string::npos; at = text.find(fragment, at + fragment.size())) ++n;
  return n;
}

// Two layers of four heads in two GQA groups: layer 0 loses head 1, layer 1 goes whole.
report::prune_report small_report() {
  report::prune_report r;
  r.model = "in.gguf";
  r.output = "out.gguf";
  r.facts = {{"selection", "method nash"}};
  for (int l = 0; l < 2; ++l) {
    report::layer_view v;
    v.kv_heads = 2;
    v.removed = l == 1;
    for (int h = 0; h < 4; ++h) v.heads.push_back({.removed = l == 0 && h == 1, .score = 0.5 * h + l, .participation = 0.25 * h});
    v.redundancy.assign(16, 0.25);
    for (int h = 0; h < 4; ++h) v.redundancy[static_cast<std::size_t>(h * 5)] = 1.0;
    r.layers.push_back(v);
  }
  r.redundancy_source = "cosine";
  r.tensors = {{"attn_q.weight", {{"blk.0.attn_q.weight", 32, 32}, nashprune::ggml_type::f32, 32, 24, nashprune::ggml_type::f32}},
               {"attn_q.weight", {{"blk.1.attn_q.weight", 32, 32}, nashprune::ggml_type::f32, 0, 0, nashprune::ggml_type::f32}},
               {"token_embd.weight", {{"token_embd.weight", 32, 100}, nashprune::ggml_type::q8_0, 32, 100, nashprune::ggml_type::q8_0}}};
  return r;
}

TEST(HtmlEscape, ReplacesEveryCharacterThatEndsTextOrAnAttribute) {
  EXPECT_EQ(report::html_escape(R"(a<b>&"c"'d')"), "a&lt;b&gt;&amp;&quot;c&quot;&#39;d&#39;");
  EXPECT_EQ(report::html_escape(""), "");
  EXPECT_EQ(report::html_escape("plain ü text"), "plain ü text");
}

TEST(HtmlReport, EveryStringOfTheCallerIsEscaped) {
  auto r = small_report();
  const std::string hostile = R"(<script>alert('x')</script>&"<img src=x onerror=y>)";
  r.model = hostile;
  r.output = hostile;
  r.facts = {{hostile, hostile}};
  r.redundancy_source = hostile;
  r.tensors[2].kind = hostile;
  r.perplexity = report::perplexity_measure{5.0, 6.0, hostile, hostile};
  const auto page = report::render_html(r);
  EXPECT_THAT(page, Not(HasSubstr("<script")));
  EXPECT_THAT(page, Not(HasSubstr("<img")));
  EXPECT_THAT(page, Not(HasSubstr("'x'")));
  // model and output in <title> and <h1>; the fact's label and value; source, kind (chart and table), text, protocol.
  EXPECT_EQ(count(page, report::html_escape(hostile)), 2U * 2 + 2 + 1 + 2 + 2);
}

TEST(HtmlReport, PageIsSelfContainedAndScriptFree) {
  const auto page = report::render_html(small_report());
  EXPECT_THAT(page, HasSubstr("Content-Security-Policy\" content=\"default-src 'none'"));
  EXPECT_THAT(page, Not(HasSubstr("<script")));
  EXPECT_THAT(page, Not(HasSubstr("src=")));
  EXPECT_THAT(page, Not(HasSubstr("href=")));
  EXPECT_THAT(page, Not(HasSubstr("url(http")));
  EXPECT_THAT(page, Not(::testing::ContainsRegex("[^a-z](nan|inf)[^a-z]")));
}

TEST(HtmlReport, DrawsEveryHeadAndFramesTheRemovedOnes) {
  const auto page = report::render_html(small_report());
  // One frame per removed head (layer 0 head 1, the four heads of layer 1) plus the legend's sample.
  EXPECT_EQ(count(page, "class=\"removed\""), 1U + 4 + 1);
  EXPECT_THAT(page, HasSubstr("<title>layer 0, head 1: removed; score 0.5; participation 0.250</title>"));
  EXPECT_THAT(page, HasSubstr("<title>layer 1, head 3: removed with its layer; score 2.5; participation 0.750</title>"));
  EXPECT_THAT(page, HasSubstr("<title>layer 0, head 2: kept; score 1; participation 0.500</title>"));
  // Heat maps: 16 cells per layer, a red mark on the row and the column of each removed head.
  EXPECT_EQ(count(page, "<title>head "), 2U * 16);
  EXPECT_EQ(count(page, "class=\"mark\""), 2U * (1 + 4) + 1);
  // A GQA boundary line per layer (two groups) and in the legend.
  EXPECT_EQ(count(page, "class=\"group\""), 2U + 1);
  EXPECT_THAT(page, HasSubstr("not measured"));
}

TEST(HtmlReport, ScoresColourTheCellsFromLowestToHighest) {
  auto r = small_report();
  const auto page = report::render_html(r);
  // Lowest score (0: layer 0 head 0) gets the scale's first colour, the highest (2.5) its last.
  EXPECT_THAT(page, HasSubstr("fill=\"#eff3ff\"><title>layer 0, head 0"));
  EXPECT_THAT(page, HasSubstr("fill=\"#08519c\"><title>layer 1, head 3"));
  // Redundancy 1 is the diverging scale's red end, 0.25 lies between white and red.
  EXPECT_THAT(page, HasSubstr("fill=\"#b2182b\"><title>head 0 · head 0: 1.000"));
}

TEST(HtmlReport, PerplexityIsShownWhenTheCallerMeasuredIt) {
  auto r = small_report();
  r.perplexity = report::perplexity_measure{4.52, 4.965, "tinystories-evaluation.txt", "llama-perplexity -c 128 -b 128"};
  const auto page = report::render_html(r);
  EXPECT_THAT(page, HasSubstr("<th>before</th><td>4.520</td>"));
  EXPECT_THAT(page, HasSubstr("<th>after</th><td>4.965</td>"));
  EXPECT_THAT(page, HasSubstr("<th>ratio</th><td>1.098</td>"));
  EXPECT_THAT(page, HasSubstr("on tinystories-evaluation.txt, llama-perplexity -c 128 -b 128"));
  EXPECT_THAT(page, Not(HasSubstr("not measured")));
}

TEST(HtmlReport, PlanWithoutScoresIsDrawnGrey) {
  auto r = small_report();
  for (auto& l : r.layers) {
    for (auto& h : l.heads) h = {.removed = h.removed, .score = std::nullopt, .participation = std::nullopt};
    l.redundancy.clear();
  }
  const auto page = report::render_html(r);
  EXPECT_EQ(count(page, "fill=\"#d9d9d9\""), 8U);
  EXPECT_THAT(page, HasSubstr("none: the plan came from elsewhere"));
  EXPECT_THAT(page, HasSubstr("<p class=\"note\">not known for this model</p>"));
}

// Bytes of a tensor in plain arithmetic: F32 4 bytes a weight, F16 2, Q8_0 34 per 32.
std::int64_t reference_bytes(nashprune::ggml_type type, std::int64_t row_length, std::int64_t rows) {
  switch (type) {
    case nashprune::ggml_type::f32: return 4 * row_length * rows;
    case nashprune::ggml_type::f16: return 2 * row_length * rows;
    default: return 34 * (row_length / 32) * rows;
  }
}

TEST(HtmlReport, BytesPerKindAreTheSumsOfTheirTensors) {
  std::mt19937 rng(11);
  const nashprune::ggml_type types[] = {nashprune::ggml_type::f32, nashprune::ggml_type::f16, nashprune::ggml_type::q8_0};
  const std::string kinds[] = {"attn_q.weight", "ffn_up.weight", "output_norm.weight"};
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<report::tensor_entry> tensors;
    std::map<std::string, std::pair<std::int64_t, std::int64_t>> expected;
    for (int t = 0; t < 30; ++t) {
      const auto type = types[rng() % 3];
      const std::int64_t blocks = 1 + static_cast<std::int64_t>(rng() % 8);
      const std::int64_t rows = 1 + static_cast<std::int64_t>(rng() % 50);
      const std::int64_t blocks_after = static_cast<std::int64_t>(rng() % static_cast<unsigned>(blocks + 1));
      const std::int64_t rows_after = static_cast<std::int64_t>(rng() % static_cast<unsigned>(rows + 1));
      const auto& kind = kinds[rng() % 3];
      tensors.push_back({kind, {{"t" + std::to_string(t), 32 * blocks, rows}, type, 32 * blocks_after, rows_after, type}});
      expected[kind].first += reference_bytes(type, 32 * blocks, rows);
      expected[kind].second += reference_bytes(type, 32 * blocks_after, rows_after);
    }
    const auto sums = report::bytes_per_kind(tensors);
    ASSERT_EQ(sums.size(), expected.size());
    std::int64_t counted = 0;
    for (const auto& k : sums) {
      EXPECT_EQ(k.bytes.before, expected.at(k.kind).first) << k.kind;
      EXPECT_EQ(k.bytes.after, expected.at(k.kind).second) << k.kind;
      counted += k.tensors;
    }
    EXPECT_EQ(counted, 30);
    EXPECT_EQ(sums.front().kind, tensors.front().kind) << "kinds keep the order of first appearance";
  }
}

TEST(HtmlReport, BadNumbersAreNamedWithTheirField) {
  using report::render_html;
  auto r = small_report();
  r.layers[1].heads[2].score = std::numeric_limits<double>::quiet_NaN();
  expect_error<std::invalid_argument>([&] { (void)render_html(r); }, {"layers[1].heads[2].score", "NaN"});
  r = small_report();
  r.layers[0].heads[3].participation = 1.5;
  expect_error<std::invalid_argument>([&] { (void)render_html(r); }, {"layers[0].heads[3].participation", "1.5", "[0, 1]"});
  r = small_report();
  r.layers[0].redundancy.pop_back();
  expect_error<std::invalid_argument>([&] { (void)render_html(r); }, {"layers[0].redundancy", "15 values, expected 16"});
  r = small_report();
  r.layers[1].redundancy[7] = -1.5;
  expect_error<std::invalid_argument>([&] { (void)render_html(r); }, {"layers[1].redundancy[7]", "-1.5", "[-1, 1]"});
  r = small_report();
  r.layers[1].redundancy[3] = std::numeric_limits<double>::infinity();
  expect_error<std::invalid_argument>([&] { (void)render_html(r); }, {"layers[1].redundancy[3]", "infinity"});
  r = small_report();
  r.layers[0].kv_heads = 3;
  expect_error<std::invalid_argument>([&] { (void)render_html(r); }, {"layers[0].kv_heads", "3 does not divide", "4 heads"});
  r = small_report();
  r.perplexity = report::perplexity_measure{0.0, 5.0, "t", ""};
  expect_error<std::invalid_argument>([&] { (void)render_html(r); }, {"perplexity.before", "not a perplexity"});
  r.perplexity = report::perplexity_measure{5.0, std::numeric_limits<double>::quiet_NaN(), "t", ""};
  expect_error<std::invalid_argument>([&] { (void)render_html(r); }, {"perplexity.after", "NaN"});
  r = small_report();
  r.tensors[0].plan.rows_after = 40;  // larger than before
  expect_error<std::invalid_argument>([&] { (void)render_html(r); }, {"index 0", "blk.0.attn_q.weight", "cannot grow"});
}

TEST(HtmlReport, WritesThePageAtomically) {
  gguf_test::scratch_dir dir;
  const auto path = dir / "report.html";
  report::write_html(path, small_report());
  std::ifstream in(path);
  const std::string written{std::istreambuf_iterator<char>(in), {}};
  EXPECT_EQ(written, report::render_html(small_report()));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path), {}), 1) << "no temporary file is left";
  expect_error<std::runtime_error>([&] { report::write_html(dir / "absent" / "report.html", small_report()); }, {"absent/report.html"});
  auto bad = small_report();
  bad.layers[0].heads[0].score = std::numeric_limits<double>::infinity();
  expect_error<std::invalid_argument>([&] { report::write_html(path, bad); }, {"layers[0].heads[0].score"});
  std::ifstream again(path);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(again), {}), written) << "a bad report leaves the previous page alone";
}

// The bundled stories260K (5 layers, 8 heads, 4 KV heads, F32): layer 2 removed, group 0 of every other layer.
struct Stories260KReport : ::testing::Test {
  const std::filesystem::path model_path = std::filesystem::path(NASHPRUNE_DATA_DIR) / "stories260K.gguf";
  void SetUp() override { ASSERT_TRUE(std::filesystem::exists(model_path)) << model_path << " is missing"; }
};

TEST_F(Stories260KReport, TensorBytesAgreeWithTheFilesAndLayersRenumber) {
  const auto model = gguf::reader::open(model_path);
  const auto shape = gguf::llama_shape::read(model);
  auto plan = gguf::keep_all(shape);
  for (auto& l : plan.layers) l.heads = {{2, 3, 4, 5, 6, 7}, {1, 2, 3}};
  plan.layers[2].keep_layer = false;
  const auto result = gguf::plan_output(model, shape, plan, {});
  const auto entries = report::tensor_entries(model, plan, result);
  ASSERT_EQ(entries.size(), model.tensors().size());
  std::int64_t before = 0;
  std::int64_t after = 0;
  for (const auto& k : report::bytes_per_kind(entries)) {
    before += k.bytes.before;
    after += k.bytes.after;
  }
  EXPECT_EQ(before, static_cast<std::int64_t>(gguf::totals(model.tensors()).bytes));
  EXPECT_EQ(after, static_cast<std::int64_t>(gguf::totals(result.tensors).bytes));
  for (const auto& e : entries) {
    if (e.plan.shape.name.starts_with("blk.2.")) {
      EXPECT_EQ(e.plan.rows_after * e.plan.row_length_after, 0) << e.plan.shape.name;
    }
    if (e.plan.shape.name == "blk.3.attn_q.weight") {
      EXPECT_EQ(e.kind, "attn_q.weight");
      EXPECT_EQ(e.plan.shape.rows, 64);  // 8 heads of 8
      EXPECT_EQ(e.plan.rows_after, 48);
    }
  }
}

TEST_F(Stories260KReport, DescribesHeadsRedundancyAndScores) {
  const auto model = gguf::reader::open(model_path);
  const auto shape = gguf::llama_shape::read(model);
  auto plan = gguf::keep_all(shape);
  plan.layers[1].heads = {{2, 3, 4, 5, 6, 7}, {1, 2, 3}};
  plan.layers[4].keep_layer = false;
  const auto result = gguf::plan_output(model, shape, plan, {});
  const std::vector<report::head_score> scores{{1, 0, 0.125, 0.0}, {3, 7, 2.0, std::nullopt}};
  const auto r = report::describe_prune(model, shape, plan, result, scores, nullptr);
  ASSERT_EQ(r.layers.size(), 5U);
  EXPECT_TRUE(r.layers[1].heads[0].removed);
  EXPECT_TRUE(r.layers[1].heads[1].removed);
  EXPECT_FALSE(r.layers[1].heads[2].removed);
  EXPECT_TRUE(r.layers[4].removed);
  EXPECT_EQ(r.layers[1].heads[0].score, 0.125);
  EXPECT_EQ(r.layers[1].heads[0].participation, 0.0);
  EXPECT_EQ(r.layers[3].heads[7].score, 2.0);
  EXPECT_FALSE(r.layers[0].heads[0].score.has_value());
  for (const auto& l : r.layers) {
    EXPECT_EQ(l.kv_heads, 4);
    ASSERT_EQ(l.redundancy.size(), 64U);
    for (int h = 0; h < 8; ++h) EXPECT_NEAR(l.redundancy[static_cast<std::size_t>(h * 9)], 1.0, 1e-6);
  }
  EXPECT_THAT(r.facts, ::testing::Contains(std::pair<std::string, std::string>{"query heads", "40 -> 30"}));
  EXPECT_THAT(r.facts, ::testing::Contains(std::pair<std::string, std::string>{"layers", "5 -> 4 (1 removed)"}));
  const auto page = report::render_html(r);
  EXPECT_EQ(count(page, "<title>head "), 5U * 64);

  const std::vector<report::head_score> wrong{{1, 8, 1.0, std::nullopt}};
  expect_error<std::invalid_argument>([&] { (void)report::describe_prune(model, shape, plan, result, wrong, nullptr); },
                                      {"scores[0]", "layer 1 head 8"});
  // The biases --compensate adds have no input tensor: they count from zero bytes,
  // so the table's totals are the output's.
  auto compensated = result;
  compensated.tensors.push_back({"blk.0.ffn_down.bias", {64}, nashprune::ggml_type::f32});
  compensated.tensors.push_back({"blk.1.attn_output.bias", {64}, nashprune::ggml_type::f32});
  const auto entries = report::tensor_entries(model, plan, compensated);
  EXPECT_EQ(entries.size(), report::tensor_entries(model, plan, result).size() + 2);
  std::int64_t before = 0;
  std::int64_t after = 0;
  std::int64_t bias_after = 0;
  for (const auto& k : report::bytes_per_kind(entries)) {
    before += k.bytes.before;
    after += k.bytes.after;
    if (k.kind == "ffn_down.bias") {
      EXPECT_EQ(k.bytes.before, 0);
      bias_after = k.bytes.after;
    }
  }
  EXPECT_EQ(bias_after, 64 * 4);
  EXPECT_EQ(before, static_cast<std::int64_t>(gguf::totals(model.tensors()).bytes));
  EXPECT_EQ(after, static_cast<std::int64_t>(gguf::totals(compensated.tensors).bytes));
}

}  // namespace
