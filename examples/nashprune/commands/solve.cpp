// `nashprune solve [GAME.json|-] [--solver NAME] [--tol EPS] [--max-iter N]`:
// solves Nash head-pruning games (nash_solvers.hpp) read as JSON,
//   {"importance": [...], "redundancy": [[...], ...], "lambda": x}
// or a batch {"layers": [game, ...]}, and prints per layer
//   {"s": [...], "iterations", "converged", "exploitability", "kkt_residual",
//    "potential", "seconds"}.
// Layers are solved one by one (the seed baseline too), each timed alone.
// Malformed JSON or a game failing validation: exit code 2 and one line on
// stderr naming the field (e.g. "layers[1].lambda").
#include <chrono>
#include <iostream>
#include <memory>
#include <nashprune/nash_solvers.hpp>
#include <optional>
#include <string>
#include <vector>

#include "command.hpp"
#include "io/json_io.hpp"

namespace {

struct owned_game {
  Eigen::VectorXd importance;
  Eigen::MatrixXd redundancy;
  double lambda = 0;
};

namespace json_io = nashprune_tool::json_io;

owned_game read_game(const json_io::json& value, const std::string& path) {
  owned_game game;
  const auto importance =
      json_io::as_numbers(json_io::field(value, path, "importance"), json_io::child(path, "importance"));
  game.importance = Eigen::Map<const Eigen::VectorXd>(importance.data(), Eigen::Index(importance.size()));
  const auto n = importance.size();
  const std::string redundancy_path = json_io::child(path, "redundancy");
  const auto& rows = json_io::require_array(json_io::field(value, path, "redundancy"), redundancy_path);
  if (rows.size() != n) {
    json_io::fail(redundancy_path, "has " + std::to_string(rows.size()) + " rows, expected " + std::to_string(n));
  }
  game.redundancy.resize(Eigen::Index(n), Eigen::Index(n));
  for (std::size_t r = 0; r < n; ++r) {
    const std::string row_path = json_io::element(redundancy_path, r);
    const auto row = json_io::as_numbers(rows[r], row_path);
    if (row.size() != n) {
      json_io::fail(row_path, "has " + std::to_string(row.size()) + " entries, expected " + std::to_string(n));
    }
    for (std::size_t c = 0; c < n; ++c) game.redundancy(Eigen::Index(r), Eigen::Index(c)) = row[c];
  }
  game.lambda = json_io::as_number(json_io::field(value, path, "lambda"), json_io::child(path, "lambda"));
  return game;
}

/// The games of a document: one game, or the members of "layers".
std::vector<owned_game> read_games(const json_io::json& document) {
  std::vector<owned_game> games;
  if (const auto* layers = document.is_object() ? json_io::optional_field(document, "", "layers") : nullptr) {
    json_io::require_array(*layers, "layers");
    if (layers->empty()) json_io::fail("layers", "is empty");
    for (std::size_t l = 0; l < layers->size(); ++l) {
      games.push_back(read_game((*layers)[l], json_io::element("layers", l)));
    }
  } else {
    games.push_back(read_game(document, ""));
  }
  return games;
}

struct solve_options {
  std::string input = "-";
  std::string output;  // empty: standard output
  std::string solver = "active-set";
  std::optional<double> tolerance;
  std::optional<std::int64_t> max_iterations;
};

int run_solve(const solve_options& options) {
  const auto kind = nashprune::parse_nash_solver_kind(options.solver);
  const auto games = read_games(json_io::read_document(options.input));
  const bool batch = games.size() > 1;
  std::vector<nashprune::nash_game<double>> views;
  for (std::size_t l = 0; l < games.size(); ++l) {
    views.push_back(nashprune::make_nash_game(games[l].importance, games[l].redundancy, games[l].lambda));
    // Validate all layers before solving any, naming the layer as the input does.
    nashprune::validate_nash_game(views.back(), {}, batch ? json_io::element("layers", l) + "." : "");
  }
  json_io::json layers = json_io::json::array();
  for (const auto& view : views) {
    const auto start = std::chrono::steady_clock::now();
    const auto solution =
        nashprune::solve_nash_layers<double>(kind, std::span(&view, 1), options.tolerance, options.max_iterations)
            .front();
    const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
    layers.push_back({{"s", std::vector<double>(solution.s.data(), solution.s.data() + solution.s.size())},
                      {"iterations", solution.iterations},
                      {"converged", solution.converged},
                      {"exploitability", solution.exploitability},
                      {"kkt_residual", solution.kkt_residual},
                      {"potential", solution.potential},
                      {"seconds", seconds.count()}});
  }
  json_io::write_document(options.output, json_io::json{{"solver", options.solver}, {"layers", layers}}, 1);
  return 0;
}

void add_options(CLI::App& app, solve_options& a) {
  std::string names;
  for (const auto& entry : nashprune::nash_solver_names) names += (names.empty() ? "" : ", ") + std::string(entry.name);
  app.add_option("game", a.input, "game JSON file, or - for stdin")->capture_default_str();
  app.add_option("--solver", a.solver, "one of: " + names)->capture_default_str();
  app.add_option("--tol", a.tolerance, "stop when the exploitability is at most this (default per solver)");
  app.add_option("--max-iter", a.max_iterations, "iteration cap (default per solver; seed: 100)");
  app.add_option("-o,--output", a.output, "write the result here instead of standard output");
}

const nashprune_tool::register_command solve_command{nashprune_tool::make_command<solve_options>(
    "solve", "Solve Nash head-pruning games given as JSON (one game or {\"layers\": [...]})",
    "nashprune solve games.json --solver active-set -o equilibria.json", add_options, run_solve)};

}  // namespace
