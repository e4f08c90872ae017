// nashprune/global_selection.hpp — global selection of structures to prune under a
// parameter (or byte) budget, over one item table of every prunable structure.
//
// The pieces, each with its math:
//  - selection_items.hpp: the item table (kinds, containers, the result type);
//  - selection_problem.hpp: constraints, counted cost and the validated problem;
//  - greedy_selection.hpp: select_greedy, the fractional-knapsack greedy with its
//    lower-bound certificate;
//  - exact_selection.hpp: solve_exact, dynamic programming or branch and bound.
#pragma once

#include "exact_selection.hpp"
#include "greedy_selection.hpp"
#include "selection_items.hpp"
#include "selection_problem.hpp"
