#include <nashprune/nash_decisions.hpp>
#include <nashprune/nash_game.hpp>
#include <nashprune/nash_solvers.hpp>

#include <Eigen/Core>
#include <iostream>

int main() {
  // One layer: 8 query heads sharing 4 KV heads (GQA 2:1), head_dim 64.
  const nashprune::attention_geometry layer(8, 4, 64);
  // Importance of each head, and how much each pair of heads says the same thing
  // (e.g. the cosine of their outputs): in every group the second head mostly
  // repeats the first.
  Eigen::VectorXd importance(8);
  importance << 1.0, 0.6, 0.9, 0.5, 0.8, 0.4, 0.7, 0.3;
  Eigen::MatrixXd redundancy = Eigen::MatrixXd::Identity(8, 8);
  for (int h = 0; h < 8; h += 2) redundancy(h, h + 1) = redundancy(h + 1, h) = 0.95;

  // The game pays importance and taxes redundancy; its equilibrium is exact.
  const auto game = nashprune::make_nash_game(importance, redundancy, 1.0);
  const auto equilibrium = nashprune::active_set_newton<double>().solve(game);

  // Keep a plan llama.cpp can run: the same number of query heads from every group.
  const auto plan = nashprune::gqa_prune_plan(layer, nashprune::head_granularity::heads_per_group, equilibrium.s);
  std::cout << "participation: " << equilibrium.s.transpose() << "\nkept query heads:";
  for (const auto h : plan.q_heads) std::cout << ' ' << h;
  std::cout << '\n';
  return plan.q_heads.size() == 4 ? 0 : 1;
}
