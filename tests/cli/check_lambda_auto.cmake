# `nashprune prune --lambda auto` on generated models: the calibrated lambda removes
# exactly the requested heads, writes a model that re-reads with the plan's shape,
# records the lambda in general.pruning.lambda, and reports an unreachable target.
# cmake -DTOOL=... -DWORK_DIR=... -P check_lambda_auto.cmake
file(MAKE_DIRECTORY ${WORK_DIR})

include(${CMAKE_CURRENT_LIST_DIR}/cli_checks.cmake)

# Multi-head attention (4 layers x 8 heads): 25 % is 8 heads, pruned exactly.
set(mha ${WORK_DIR}/lambda_mha.gguf)
run_tool(ignored generate ${mha} --kv-heads 8 --force)
run_tool(out prune ${mha} ${WORK_DIR}/lambda_mha_pruned.gguf --force --unit heads --target 0.25 --lambda auto)
expect("${out}" "lambda auto: ([0-9.e+-]+) \\([0-9]+ solves\\); requested 8 heads, equilibria prune 8, plan removes 8 heads\n")
set(lambda ${CMAKE_MATCH_1})
if(lambda STREQUAL "0.5")
  message(FATAL_ERROR "the calibrated lambda is the default 0.5: nothing was searched?\n${out}")
endif()
run_tool(meta inspect ${WORK_DIR}/lambda_mha_pruned.gguf --metadata)
expect("${meta}" "general.pruning.total_heads_pruned = 8\n")
# The provenance holds the calibrated lambda (as f32: compare its leading digits).
string(SUBSTRING "${lambda}" 0 4 lambda_head)
expect("${meta}" "general.pruning.lambda = ${lambda_head}")

# GQA (8 query heads over 4 kv groups), whole groups and the same heads from every
# group: the plans stay GQA-consistent (the writer rejects any other) and still
# remove exactly the 8 heads asked, though the equilibria prune more single heads.
set(gqa ${WORK_DIR}/lambda_gqa.gguf)
run_tool(ignored generate ${gqa} --force)
foreach(structure groups heads)
  run_tool(out prune ${gqa} ${WORK_DIR}/lambda_gqa_${structure}.gguf --force --unit heads --target 0.25 --lambda auto
           --structures ${structure})
  expect("${out}" "lambda auto: [0-9.e+-]+ \\([0-9]+ solves\\); requested 8 heads, equilibria prune [0-9]+, plan removes 8 heads\n")
  run_tool(meta inspect ${WORK_DIR}/lambda_gqa_${structure}.gguf --metadata)
  expect("${meta}" "general.pruning.total_heads_pruned = 8\n")
endforeach()

# A target beyond --max-prune (at most 2 of 8 heads per layer, 28 of 32 asked) is refused,
# naming the most the caps allow.
execute_process(COMMAND ${TOOL} prune ${mha} --dry-run --unit heads --target 0.9 --lambda auto --max-prune 0.25
                RESULT_VARIABLE code ERROR_VARIABLE err OUTPUT_QUIET)
if(NOT code EQUAL 2 OR NOT err MATCHES "^nashprune: error: --target 0.9 asks for 28 of the 32 heads; --structures heads can remove at most 8 \\(25.0 %\\)")
  message(FATAL_ERROR "--lambda auto beyond --max-prune: exit code ${code}, stderr: ${err}")
endif()

# --lambda auto counts heads of the Nash equilibria: other units or games are refused.
execute_process(COMMAND ${TOOL} prune ${mha} --dry-run --lambda auto RESULT_VARIABLE code ERROR_VARIABLE err OUTPUT_QUIET)
if(NOT code EQUAL 2 OR NOT err MATCHES "^nashprune: error: --lambda auto needs --unit heads, --game cosine and --selector greedy\n$")
  message(FATAL_ERROR "--lambda auto with --unit params: exit code ${code}, stderr: ${err}")
endif()
