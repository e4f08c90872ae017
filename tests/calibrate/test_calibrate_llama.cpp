// Calibration through real llama.cpp (label `llama`): the generated model's
// planted duplicate heads come out as cosine ≈ 1 pairs, the accumulated
// statistics equal a direct computation on the captured tensors, and bad
// inputs fail before any evaluation.
#include <gtest/gtest.h>

#include <calibrate/calibration_stats.hpp>
#include <calibrate/llama_capture.hpp>
#include <calibrate/llama_text_run.hpp>
#include <calibrate/moment_passes.hpp>
#include <gguf/synthetic.hpp>
#include <gguf/tensor_floats.hpp>

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <iterator>
#include <string>
#include <fstream>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "gguf_test_files.hpp"

namespace {

std::string sample_text(std::size_t bytes) {
  const std::string words[] = {"the ", "cat ", "sat ", "on ", "a ", "warm ", "mat. ", "Then ", "it ", "ran ", "away! "};
  std::string s;
  for (std::size_t i = 0; s.size() < bytes; ++i) s += words[(i * 7 + i / 3) % std::size(words)];
  return s;
}

struct calibration_fixture : ::testing::Test {
  gguf_test::scratch_dir dir;
  std::filesystem::path model = dir / "synthetic.gguf";
  std::filesystem::path text = dir / "text.txt";
  std::vector<gguf::planted_head> planted;
  void SetUp() override {
    planted = gguf::generate_synthetic(model, {}, {});
    std::ofstream(text) << sample_text(600);
  }
  calibrate::capture_options options() const {
    calibrate::capture_options o;
    o.model = model;
    o.text = text;
    o.context = 64;
    o.threads = 2;
    return o;
  }
};

TEST_F(calibration_fixture, PlantedDuplicateHeadsHaveCosineOne) {
  const auto stats = calibrate::run_calibration(options());
  EXPECT_GE(stats.tokens, 128U);
  int duplicates = 0;
  for (const auto& p : planted) {
    const auto& cos = stats.layers[static_cast<std::size_t>(p.layer)].head_cosine;
    if (p.duplicate) {
      ++duplicates;
      EXPECT_NEAR(cos(p.head, p.twin), 1.0, 1e-4) << "layer " << p.layer << " head " << p.head;
    }
  }
  EXPECT_GT(duplicates, 0);
  // Unplanted pairs of distinct random heads are far from duplicates.
  const auto& cos0 = stats.layers[0].head_cosine;
  for (Eigen::Index i = 0; i < cos0.rows(); ++i) {
    for (Eigen::Index j = 0; j < i; ++j) EXPECT_LT(cos0(i, j), 0.99) << i << "," << j;
  }
}

TEST_F(calibration_fixture, StatisticsEqualADirectComputationOnTheCapturedTensors) {
  struct direct {
    Eigen::MatrixXd gram, output_gram, relative_gram;
    Eigen::VectorXd attn_sum2, ffn_sum2;
    double attn_bi = 0, mlp_bi = 0, layer_bi = 0, residual = 0;
    std::vector<std::vector<double>> layer_in, attn_out;  // rows of the current chunk
  };
  const auto file = gguf::reader::open(model);
  const auto shape = gguf::llama_shape::read(file);
  std::map<std::int64_t, direct> ref;
  auto one_minus_cos = [](const std::vector<double>& a, const std::vector<double>& b) {
    double ab = 0, aa = 0, bb = 0;
    for (std::size_t k = 0; k < a.size(); ++k) ab += a[k] * b[k], aa += a[k] * a[k], bb += b[k] * b[k];
    return 1.0 - ab / std::sqrt(aa * bb);
  };
  auto o = options();
  const std::int64_t hd = shape.head_dim_v;
  o.observe = [&](std::int64_t layer, calibrate::activation kind, const calibrate::activation_view& x) {
    auto& r = ref[layer];
    std::vector<std::vector<double>> rows(static_cast<std::size_t>(x.rows()), std::vector<double>(static_cast<std::size_t>(x.cols())));
    for (Eigen::Index t = 0; t < x.rows(); ++t) for (Eigen::Index c = 0; c < x.cols(); ++c) rows[t][c] = x(t, c);
    switch (kind) {
      case calibrate::activation::head_outputs: {
        const auto n = x.cols() / hd;
        if (r.gram.size() == 0) {
          r.gram = r.output_gram = r.relative_gram = Eigen::MatrixXd::Zero(n, n);
          r.attn_sum2 = Eigen::VectorXd::Zero(x.cols());
        }
        // y_h = W_o[:, head h] x_h, then P_ij = Σ <y_i, y_j>, all in plain loops.
        const gguf::float_matrix wo(file.tensor(gguf::layer_tensor(layer, "attn_output.weight")));
        const auto w = wo.map();
        for (std::size_t t = 0; t < rows.size(); ++t) {
          const auto& row = rows[t];
          double h2 = 0;  // ‖h(t)‖² of the layer input, seen just before
          for (double v : r.layer_in[t]) h2 += v * v;
          std::vector<std::vector<double>> y(static_cast<std::size_t>(n), std::vector<double>(static_cast<std::size_t>(w.rows()), 0.0));
          for (Eigen::Index h = 0; h < n; ++h)
            for (Eigen::Index e = 0; e < w.rows(); ++e)
              for (Eigen::Index k = 0; k < hd; ++k) y[h][e] += double{w(e, h * hd + k)} * row[h * hd + k];
          for (Eigen::Index i = 0; i < n; ++i)
            for (Eigen::Index j = 0; j < n; ++j)
              for (Eigen::Index e = 0; e < w.rows(); ++e) {
                r.output_gram(i, j) += y[i][e] * y[j][e];
                r.relative_gram(i, j) += y[i][e] * y[j][e] / h2;
              }
        }
        for (const auto& row : rows) {
          for (Eigen::Index i = 0; i < n; ++i)
            for (Eigen::Index j = 0; j < n; ++j)
              for (Eigen::Index k = 0; k < hd; ++k) r.gram(i, j) += row[i * hd + k] * row[j * hd + k];
          for (Eigen::Index c = 0; c < x.cols(); ++c) r.attn_sum2(c) += row[c] * row[c];
        }
        break;
      }
      case calibrate::activation::ffn_inner:
        if (r.ffn_sum2.size() == 0) r.ffn_sum2 = Eigen::VectorXd::Zero(x.cols());
        for (const auto& row : rows) for (Eigen::Index c = 0; c < x.cols(); ++c) r.ffn_sum2(c) += row[c] * row[c];
        break;
      case calibrate::activation::layer_in:
        r.layer_in = rows;
        for (const auto& row : rows) for (double v : row) r.residual += v * v;
        break;
      case calibrate::activation::attn_block_out:
        r.attn_out = rows;
        for (std::size_t t = 0; t < rows.size(); ++t) r.attn_bi += one_minus_cos(r.layer_in[t], rows[t]);
        break;
      case calibrate::activation::layer_out:
        for (std::size_t t = 0; t < rows.size(); ++t) {
          r.mlp_bi += one_minus_cos(r.attn_out[t], rows[t]);
          r.layer_bi += one_minus_cos(r.layer_in[t], rows[t]);
        }
        break;
    }
  };
  const auto stats = calibrate::run_calibration(o);
  ASSERT_EQ(ref.size(), stats.layers.size());
  const double n = static_cast<double>(stats.tokens);
  for (std::size_t l = 0; l < stats.layers.size(); ++l) {
    const auto& s = stats.layers[l];
    const auto& r = ref[static_cast<std::int64_t>(l)];
    EXPECT_LE((s.head_gram - r.gram).cwiseAbs().maxCoeff(), 1e-6 * (1 + r.gram.cwiseAbs().maxCoeff())) << "layer " << l;
    // The projection runs in float: a relative tolerance of a float sum.
    EXPECT_LE((s.head_output_gram - r.output_gram).cwiseAbs().maxCoeff(), 1e-5 * (1 + r.output_gram.cwiseAbs().maxCoeff())) << "layer " << l;
    EXPECT_LE((s.head_relative_gram - r.relative_gram).cwiseAbs().maxCoeff(), 1e-5 * (1 + r.relative_gram.cwiseAbs().maxCoeff())) << "layer " << l;
    EXPECT_NEAR(s.residual_energy, r.residual, 1e-9 * r.residual) << "layer " << l;
    EXPECT_GT(s.residual_energy, 0.0);
    EXPECT_LE((s.attn_in_sum2 - r.attn_sum2).cwiseAbs().maxCoeff(), 1e-9 * (1 + r.attn_sum2.maxCoeff())) << "layer " << l;
    EXPECT_LE((s.ffn_in_sum2 - r.ffn_sum2).cwiseAbs().maxCoeff(), 1e-9 * (1 + r.ffn_sum2.maxCoeff())) << "layer " << l;
    EXPECT_NEAR(s.attn_influence, r.attn_bi / n, 1e-5) << "layer " << l;
    EXPECT_NEAR(s.mlp_influence, r.mlp_bi / n, 1e-5) << "layer " << l;
    EXPECT_NEAR(s.layer_influence, r.layer_bi / n, 1e-5) << "layer " << l;
    EXPECT_GT(s.layer_influence, 0.0);
    // cosine is the normalised Gram.
    for (Eigen::Index i = 0; i < r.gram.rows(); ++i)
      for (Eigen::Index j = 0; j < r.gram.rows(); ++j)
        EXPECT_NEAR(s.head_cosine(i, j), r.gram(i, j) / std::sqrt(r.gram(i, i) * r.gram(j, j)), 1e-6);  // the kernel sums a chunk in float
  }
}

TEST_F(calibration_fixture, TextShorterThanOneContextIsRejected) {
  std::ofstream(text, std::ios::trunc) << "too short";
  try {
    (void)calibrate::run_calibration(options());
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("shorter than one context"), std::string::npos) << e.what();
  }
}

TEST_F(calibration_fixture, UnsupportedArchitectureIsRejected) {
  const auto in = gguf::reader::open(model);
  auto kv = in.metadata();
  gguf::set(kv, "general.architecture", gguf::value::string("gpt2"));
  const auto other = dir / "gpt2.gguf";
  {
    std::vector<gguf::tensor_spec> specs(in.tensors().begin(), in.tensors().end());
    gguf::writer out(other, {});
    out.begin(kv, specs);
    for (const auto& t : in.tensors()) out.write(t.data);
    out.commit();
  }
  auto o = options();
  o.model = other;
  try {
    (void)calibrate::run_calibration(o);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("gpt2"), std::string::npos) << e.what();
  }
}

TEST_F(calibration_fixture, TokensBelowOneContextIsRejected) {
  auto o = options();
  o.max_tokens = 10;
  EXPECT_THROW((void)calibrate::run_calibration(o), std::invalid_argument);
}

// A text run tokenizes only a prefix of a long text when --tokens limits it: the
// first tokens must be those of the whole text, for a vocabulary with merges
// (stories260K's SPM), one of bytes alone (the generated model's), and texts
// with and without line breaks.
TEST(TextTokens, APrefixGivesTheWholeTextsFirstTokens) {
  gguf_test::scratch_dir dir;
  const std::filesystem::path data = NASHPRUNE_DATA_DIR;
  const auto generated = dir / "synthetic.gguf";
  gguf::generate_synthetic(generated, {}, {});
  // 30 KB of each: the whole text is tokenized for reference, and llama.cpp's
  // byte fallback (all the generated vocabulary has) is quadratic in its length.
  constexpr std::size_t bytes = 30000;
  const auto read = [](const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {}).substr(0, bytes);
  };
  const std::string one_line = sample_text(bytes);
  const std::vector<std::pair<std::string, std::string>> texts = {
      {"calibration", read(data / "tinystories-calibration.txt")},
      {"evaluation", read(data / "tinystories-evaluation.txt")},
      {"one line", one_line},
      {"short lines", [&] {
         std::string s = one_line;
         for (std::size_t i = 37; i < s.size(); i += 37) s[i] = '\n';
         return s;
       }()}};
  llama_backend_init();
  for (const auto& path : {data / "stories260K.gguf", generated}) {
    auto params = llama_model_default_params();
    params.vocab_only = true;
    std::unique_ptr<llama_model, decltype(&llama_model_free)> model(llama_model_load_from_file(path.c_str(), params), llama_model_free);
    ASSERT_NE(model, nullptr) << path;
    const llama_vocab* vocab = llama_model_get_vocab(model.get());
    const bool add_bos = llama_vocab_get_add_bos(vocab);
    for (const auto& [name, text] : texts) {
      const auto whole = calibrate::tokenize_text(vocab, text, add_bos, 0);
      ASSERT_GT(whole.size(), 2000U) << name;
      for (const std::size_t wanted : {std::size_t{1}, std::size_t{128}, std::size_t{1000}, whole.size() - 1, whole.size(), whole.size() + 1}) {
        SCOPED_TRACE(path.filename().string() + ", " + name + ", " + std::to_string(wanted) + " tokens");
        const auto first = calibrate::tokenize_text(vocab, text, add_bos, wanted);
        ASSERT_EQ(first.size(), std::min(wanted, whole.size()));
        EXPECT_TRUE(std::equal(first.begin(), first.end(), whole.begin()));
      }
    }
  }
}

// stories260K with the bundled calibration text.
struct real_calibration : ::testing::Test {
  const std::filesystem::path data = NASHPRUNE_DATA_DIR;
  const std::filesystem::path model = data / "stories260K.gguf";
  const std::filesystem::path text = data / "tinystories-calibration.txt";
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(model) && std::filesystem::exists(text)) << model << " or " << text << " is missing";
  }
  calibrate::capture_options options(std::int64_t max_tokens) const {
    calibrate::capture_options o;
    o.model = model;
    o.text = text;
    o.context = 128;
    o.max_tokens = max_tokens;
    o.threads = 2;
    return o;
  }
};

TEST_F(real_calibration, Stories260KStatisticsAreFiniteAndInRange) {
  const auto stats = calibrate::run_calibration(options(1024));
  EXPECT_EQ(stats.tokens, 1024U);
  for (const auto& l : stats.layers) {
    EXPECT_TRUE(l.head_cosine.allFinite());
    EXPECT_TRUE(std::isfinite(l.layer_influence));
    EXPECT_GT(l.layer_influence, 0.0);
    EXPECT_LT(l.layer_influence, 1.0);
  }
}

// H-GSP priors in `nashprune prune`: the calibration's block influence reweights the
// selection (temperature 0 turns the priors off, so the plans must differ), and
// asking for priors without calibration statistics is a usage error (exit 2).
TEST_F(real_calibration, PrunePriorsFromBlockInfluenceChangeThePlan) {
  gguf_test::scratch_dir dir;
  calibrate::write_stats(dir / "stats.gguf", calibrate::run_calibration(options(2048)), false);
  const auto plan_at = [&](const char* temperature) {
    const auto plan = dir / (std::string("plan-") + temperature + ".json");
    const std::string command = std::string(NASHPRUNE_TOOL) + " prune '" + model.string() + "' '" +
                                (dir / "out.gguf").string() + "' --calibration '" + (dir / "stats.gguf").string() +
                                "' --score wanda --game none --structures heads,mlp --target 0.2 --dry-run --temperature " +
                                temperature + " --plan-out '" + plan.string() + "' > /dev/null";
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    std::ifstream in(plan);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  const auto without_priors = plan_at("0");
  const auto with_priors = plan_at("3");
  EXPECT_FALSE(without_priors.empty());
  EXPECT_NE(without_priors, with_priors);
  const std::string no_stats = std::string(NASHPRUNE_TOOL) + " prune '" + model.string() + "' '" +
                               (dir / "out.gguf").string() + "' --temperature 2 --dry-run 2> /dev/null";
  const int status = std::system(no_stats.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
}

}  // namespace

namespace {

// --game output: the price-searched game (printed as nash) and the exact optimum remove the same
// number of heads within the budget, the game's plan costs no less energy than the
// exact one (printed by prune), the written model records the price as
// general.pruning.lambda, and it is refused without calibration (exit 2).
TEST_F(real_calibration, OutputPerturbationPlansStayWithinTheBudget) {
  gguf_test::scratch_dir dir;
  calibrate::write_stats(dir / "stats.gguf", calibrate::run_calibration(options(2048)), false);
  const auto run = [&](const char* method, const char* target) {
    const auto log = dir / (std::string(method) + target + ".log");
    const std::string command = std::string(NASHPRUNE_TOOL) + " prune '" + model.string() + "' --dry-run --unit heads --target " +
                                target + " --game output --selector " + (std::string(method) == "nash" ? "greedy" : "exact") + " --calibration '" +
                                (dir / "stats.gguf").string() + "' > '" + log.string() + "'";
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    std::ifstream in(log);
    std::string text(std::istreambuf_iterator<char>(in), {});
    const auto at = text.find("output perturbation (" + std::string(method) + ")");
    EXPECT_NE(at, std::string::npos) << text;
    // "... plans remove N, energy E (relative ..."
    const auto removed_at = text.find("plans remove ", at);
    const auto energy_at = text.find("energy ", at);
    return std::pair{std::stoll(text.substr(removed_at + 13)), std::stod(text.substr(energy_at + 7))};
  };
  for (const char* target : {"0.25", "0.5"}) {
    const auto [nash_removed, nash_energy] = run("nash", target);
    const auto [exact_removed, exact_energy] = run("exact", target);
    EXPECT_EQ(nash_removed, exact_removed) << target;
    EXPECT_LE(nash_removed, std::stod(target) * 40) << target;  // stories260K: 40 heads
    EXPECT_GT(exact_removed, 0) << target;
    EXPECT_GE(nash_energy, exact_energy * (1 - 1e-6)) << target;
  }
  // The written model records the price the search used as general.pruning.lambda (not the unused default 0.5).
  const auto out = dir / "output.gguf", log = dir / "output.log", meta = dir / "meta.log";
  ASSERT_EQ(std::system((std::string(NASHPRUNE_TOOL) + " prune '" + model.string() + "' '" + out.string() + "' --unit heads --target 0.25 --game output --calibration '" +
                         (dir / "stats.gguf").string() + "' --force > '" + log.string() + "'")
                            .c_str()),
            0);
  ASSERT_EQ(std::system((std::string(NASHPRUNE_TOOL) + " inspect '" + out.string() + "' --metadata > '" + meta.string() + "'").c_str()), 0);
  const auto number_after = [](const std::filesystem::path& file, const std::string& key) {
    std::ifstream in(file);
    const std::string text(std::istreambuf_iterator<char>(in), {});
    const auto at = text.find(key);
    EXPECT_NE(at, std::string::npos) << key << " in " << text;
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + key.size()));
  };
  const double price = number_after(log, "output perturbation (nash): price ");
  EXPECT_GT(price, 0.0);
  EXPECT_NEAR(number_after(meta, "general.pruning.lambda = "), price, 1e-5 * price);
  const std::string no_stats = std::string(NASHPRUNE_TOOL) + " prune '" + model.string() +
                               "' --dry-run --unit heads --game output 2> /dev/null";
  const int status = std::system(no_stats.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
}

}  // namespace

namespace {

// --game obs on stories260K: the written model removes the requested whole groups and
// records the method, the exact per-layer choice costs no more than the greedy one,
// heads and MLP channels stay within a parameter target, and the usage errors
// (no calibration, statistics without the moments, structures it cannot remove)
// exit 2 naming the argument.
TEST_F(real_calibration, CompensationAwareChoiceMeetsTheTarget) {
  gguf_test::scratch_dir dir;
  const auto stats = calibrate::run_calibration(options(2048));
  calibrate::write_stats(dir / "stats.gguf", stats, false);
  const auto read = [](const std::filesystem::path& file) {
    std::ifstream in(file);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const auto prune = [&](const std::string& name, const std::string& arguments) {
    const auto log = dir / (name + ".log");
    const std::string command = std::string(NASHPRUNE_TOOL) + " prune '" + model.string() + "' " + arguments + " > '" + log.string() + "' 2>&1";
    const int status = std::system(command.c_str());
    EXPECT_TRUE(WIFEXITED(status)) << command;
    return std::pair{WEXITSTATUS(status), read(log)};
  };
  const auto number_after = [](const std::string& text, const std::string& key) {
    const auto at = text.find(key);
    EXPECT_NE(at, std::string::npos) << key << " in " << text;
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + key.size()));
  };
  const std::string calibration = " --calibration '" + (dir / "stats.gguf").string() + "'";
  const auto out = dir / "groups.gguf";
  const auto [written, log] = prune("groups", "'" + out.string() + "' --game obs --selector exact --structures groups --unit heads --target 0.25" + calibration);
  ASSERT_EQ(written, 0) << log;
  EXPECT_EQ(number_after(log, "plans remove "), 10.0) << log;  // 10 of stories260K's 40 heads: 5 groups of 2
  EXPECT_NE(log.find("heads 40 -> 30"), std::string::npos) << log;
  ASSERT_EQ(std::system((std::string(NASHPRUNE_TOOL) + " inspect '" + out.string() + "' --metadata > '" + (dir / "meta.log").string() + "'").c_str()), 0);
  EXPECT_NE(read(dir / "meta.log").find("general.pruning.method = \"obs\""), std::string::npos);
  for (const char* structures : {"groups", "heads"}) {
    const auto [exact_status, exact] = prune("exact", std::string("--dry-run --game obs --selector exact --unit heads --target 0.5 --structures ") + structures + calibration);
    const auto [greedy_status, greedy] = prune("greedy", std::string("--dry-run --game obs --selector greedy --unit heads --target 0.5 --structures ") + structures + calibration);
    ASSERT_EQ(exact_status, 0) << exact;
    ASSERT_EQ(greedy_status, 0) << greedy;
    EXPECT_EQ(number_after(exact, "plans remove "), number_after(greedy, "plans remove ")) << structures;
    EXPECT_LE(number_after(exact, "summed refit error "), number_after(greedy, "summed refit error ") * (1 + 1e-9)) << structures;
  }
  const auto [mixed_status, mixed] = prune("mixed", "--dry-run --game obs --structures heads,mlp --target 0.2" + calibration);
  ASSERT_EQ(mixed_status, 0) << mixed;
  const double requested = number_after(mixed, "requested ");
  EXPECT_GT(number_after(mixed, "plans remove "), 0.9 * requested) << mixed;
  EXPECT_LE(number_after(mixed, "plans remove "), requested) << mixed;

  calibrate::write_stats(dir / "bare.gguf", [&] {
    auto bare = stats;
    for (auto& l : bare.layers) {
      l.attn_in_mean.resize(0);
      l.ffn_in_mean.resize(0);
      l.attn_in_covariance.resize(0, 0);
      l.ffn_in_covariance.resize(0, 0);
    }
    return bare;
  }(), false);
  const std::pair<std::string, std::string> refused[] = {
      {"--dry-run --game obs --unit heads", "--calibration"},
      {"--dry-run --game obs --unit heads --compensate none --calibration '" + (dir / "bare.gguf").string() + "'", "moments"},
      {"--dry-run --game obs --structures heads,layers" + calibration, "--structures"},
      {"--dry-run --game obs --structures heads,mlp --unit heads" + calibration, "--unit heads"},
  };
  for (const auto& [arguments, named] : refused) {
    const auto [status, text] = prune("refused", arguments);
    EXPECT_EQ(status, 2) << arguments << '\n' << text;
    EXPECT_NE(text.find(named), std::string::npos) << arguments << '\n' << text;
  }
}

// One context of 128 tokens is fewer samples than ffn_down's 172 inputs: the
// covariance is singular, and float rounding makes it slightly indefinite. The
// refit still runs (its damping absorbs the rounding) for heads and MLP channels,
// with the obs choice and with plain magnitude scores.
TEST_F(real_calibration, MomentsOfFewerTokensThanInputsAreRefit) {
  gguf_test::scratch_dir dir;
  calibrate::write_stats(dir / "stats.gguf", calibrate::run_calibration(options(128)), false);
  for (const char* choice : {"--game obs", "--score magnitude --game none --temperature 0"}) {
    const auto log = dir / "prune.log";
    const std::string command = std::string(NASHPRUNE_TOOL) + " prune '" + model.string() + "' '" + (dir / "out.gguf").string() +
                                "' --structures heads,mlp --target 0.2 --compensate refit --force " + choice + " --calibration '" +
                                (dir / "stats.gguf").string() + "' > '" + log.string() + "' 2>&1";
    const int status = std::system(command.c_str());
    std::ifstream in(log);
    const std::string text(std::istreambuf_iterator<char>(in), {});
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << choice << '\n' << text;
    EXPECT_NE(text.find("ffn_down.weight: "), std::string::npos) << text;  // an MLP refit was reported
    EXPECT_TRUE(std::filesystem::exists(dir / "out.gguf"));
  }
}

}  // namespace

namespace {

std::string file_text(const std::filesystem::path& file) {
  std::ifstream in(file);
  return {std::istreambuf_iterator<char>(in), {}};
}

double largest_difference(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  EXPECT_EQ(a.rows(), b.rows());
  EXPECT_EQ(a.cols(), b.cols());
  double worst = 0;
  for (Eigen::Index j = 0; j < a.cols(); ++j) {
    for (Eigen::Index i = 0; i < a.rows(); ++i) worst = std::max(worst, std::abs(a(i, j) - b(i, j)));
  }
  return worst;
}

// calibrate --max-memory: a budget of two layers' moments on stories260K (5 layers,
// the accumulators of inputs 64 and 172 wide each) runs the text in three passes, and the
// file holds the moments one pass gives. llama.cpp computes each layer's input
// the same way whichever nodes the evaluation callback observes, and the moments
// are accumulated in double in the same order, so the only admissible difference
// is float rounding of the stored values: at most 1e-6 of the largest magnitude of
// the tensor (float's unit roundoff is 6e-8; the margin allows a last-bit
// difference in llama.cpp's activations if a different graph split reorders a
// sum). A budget below one layer's moments is a usage error naming --max-memory
// and the smallest budget that works.
TEST_F(real_calibration, MomentsInSeveralPassesEqualOnePass) {
  gguf_test::scratch_dir dir;
  const auto calibrate_with = [&](const std::string& name, const std::string& budget) {
    const auto log = dir / (name + ".log");
    const std::string command = std::string(NASHPRUNE_TOOL) + " calibrate '" + model.string() + "' --text '" + text.string() +
                                "' --tokens 1024 --ctx 128 --max-memory " + budget + " -o '" + (dir / (name + ".gguf")).string() +
                                "' > '" + log.string() + "' 2>&1";
    const int status = std::system(command.c_str());
    EXPECT_TRUE(WIFEXITED(status)) << command;
    return std::pair{WEXITSTATUS(status), file_text(log)};
  };
  const auto [one_status, one_log] = calibrate_with("one", "1G");
  ASSERT_EQ(one_status, 0) << one_log;
  EXPECT_NE(one_log.find("1 group, 1 pass"), std::string::npos) << one_log;
  const std::uint64_t one_layer = calibrate::smallest_moment_budget(calibrate::fingerprint::of(gguf::llama_shape::read(gguf::reader::open(model))));
  const auto [three_status, three_log] = calibrate_with("three", std::to_string(2 * one_layer));
  ASSERT_EQ(three_status, 0) << three_log;
  EXPECT_NE(three_log.find("3 groups, 3 passes"), std::string::npos) << three_log;
  EXPECT_NE(three_log.find("pass 3: layers 4-4"), std::string::npos) << three_log;

  const auto one = calibrate::read_stats(dir / "one.gguf");
  const auto three = calibrate::read_stats(dir / "three.gguf");
  ASSERT_EQ(one.layers.size(), 5U);
  ASSERT_EQ(three.layers.size(), 5U);
  EXPECT_EQ(one.tokens, three.tokens);
  const auto expect_close = [](const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, const std::string& what) {
    ASSERT_GT(a.size(), 0) << what;
    EXPECT_LE(largest_difference(a, b), 1e-6 * a.cwiseAbs().maxCoeff()) << what;
  };
  for (std::size_t i = 0; i < one.layers.size(); ++i) {
    const auto& a = one.layers[i];
    const auto& b = three.layers[i];
    const auto where = "layer " + std::to_string(i);
    expect_close(a.attn_in_mean, b.attn_in_mean, where + " attn_in_mean");
    expect_close(a.attn_in_covariance, b.attn_in_covariance, where + " attn_in_covariance");
    expect_close(a.ffn_in_mean, b.ffn_in_mean, where + " ffn_in_mean");
    expect_close(a.ffn_in_covariance, b.ffn_in_covariance, where + " ffn_in_covariance");
    expect_close(a.head_gram, b.head_gram, where + " head_gram");
    expect_close(a.head_output_gram, b.head_output_gram, where + " head_output_gram");
    EXPECT_EQ(a.layer_influence, b.layer_influence) << where;
  }

  const auto [small_status, small_log] = calibrate_with("small", std::to_string(one_layer - 1));
  EXPECT_EQ(small_status, 2) << small_log;
  EXPECT_NE(small_log.find("--max-memory"), std::string::npos) << small_log;
  EXPECT_NE(small_log.find("the smallest budget that works is " + std::to_string(one_layer) + " bytes"), std::string::npos) << small_log;
  EXPECT_FALSE(std::filesystem::exists(dir / "small.gguf"));
}

}  // namespace
