# `nashprune ablation-plan` on an ablation of whole layers (planted losses on a
# generated 4-layer model, tests/cli/testdata/layer_ablation.json): layers 1
# and 2 have the smallest single losses but interact (+1.0), so the exact pair is
# {1, 3} (loss +0.4, measured: exact) and that of the single losses alone
# (--game none, or the deprecated --method greedy) is {1, 2}; layer 0 (the worst,
# +5) stays frozen unless --freeze-first 0; a plan removing layers 1 and 3 is
# written and prune applies it; a file that does not match the model is refused.
# cmake -DTOOL=... -DDATA=... -DWORK_DIR=... -P check_block_ablation_plan.cmake
file(MAKE_DIRECTORY ${WORK_DIR})
set(model ${WORK_DIR}/generated.gguf)

include(${CMAKE_CURRENT_LIST_DIR}/cli_checks.cmake)

run_tool(ignored generate ${model} --force)
run_tool(out ablation-plan ${model} --ablation ${DATA}/layer_ablation.json --count 2 --plan-out ${WORK_DIR}/exact.json)
expect("${out}" "game ablation, selector exact: removing 2 of 4 layers \\(3 sets of the 3 unfrozen compared\\): layers \\[1 3\\]; loss increase 0.4 .*measured")
run_tool(out ablation-plan ${model} --ablation ${DATA}/layer_ablation.json --count 2 --game none --plan-out ${WORK_DIR}/greedy.json)
expect("${out}" "game none, selector exact: .*layers \\[1 2\\]")
# The deprecated spelling chooses the same, with one deprecation line.
execute_process(COMMAND ${TOOL} ablation-plan ${model} --ablation ${DATA}/layer_ablation.json --count 2 --method greedy --plan-out ${WORK_DIR}/greedy_method.json
                RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT code EQUAL 0 OR NOT err STREQUAL "nashprune: warning: --method is deprecated: use --game none --selector exact\n")
  message(FATAL_ERROR "--method greedy: exit code ${code}, stderr '${err}' (one deprecation line expected)")
endif()
expect("${out}" "layers \\[1 2\\]")
file(READ ${WORK_DIR}/greedy.json greedy)
file(READ ${WORK_DIR}/greedy_method.json greedy_method)
if(NOT greedy STREQUAL greedy_method)
  message(FATAL_ERROR "--method greedy and --game none wrote different plans")
endif()
run_tool(out ablation-plan ${model} --ablation ${DATA}/layer_ablation.json --count 3 --plan-out ${WORK_DIR}/three.json)
expect("${out}" "layers \\[1 2 3\\]; loss increase 1.6 .*modelled from singles and pairs")
run_tool(out ablation-plan ${model} --ablation ${DATA}/layer_ablation.json --count 3 --freeze-first 0 --freeze-last 1 --plan-out ${WORK_DIR}/unfrozen.json)
expect("${out}" "layers \\[0 1 2\\]")
run_tool(out prune ${model} ${WORK_DIR}/pruned.gguf --force --plan ${WORK_DIR}/exact.json)
expect("${out}" "layer 1: removed\n.*layer 3: removed")
run_tool_failing(2 out ablation-plan ${model} --ablation ${DATA}/layer_ablation.json --count 4 --plan-out ${WORK_DIR}/bad.json)
expect("${out}" "^nashprune: error: cannot remove 4 layers: 3 are not frozen")
run_tool_failing(2 out ablation-plan ${model} --ablation ${DATA}/layer_ablation.json --selector greedy --plan-out ${WORK_DIR}/bad.json)
expect("${out}" "^nashprune: error: --selector greedy is the price search over heads: layers units take --selector exact")
run_tool_failing(2 out ablation-plan ${model} --ablation ${DATA}/layer_ablation.json --game cosine --plan-out ${WORK_DIR}/bad.json)
expect("${out}" "^nashprune: error: --game must be ablation or none on the loss model of nashprune ablate, got 'cosine'")
run_tool_failing(2 out ablation-plan ${model} --ablation ${DATA}/layer_ablation.json --game none --selector greedy --plan-out ${WORK_DIR}/bad.json)
expect("${out}" "^nashprune: error: --game none \\(the single losses alone\\) chooses by enumeration: --selector exact")
run_tool_failing(2 out ablation-plan ${model} --ablation ${DATA}/layer_ablation.json --method exact --game ablation --plan-out ${WORK_DIR}/bad.json)
expect("${out}" "^nashprune: error: --method is the deprecated spelling of --game and --selector: give one or the other")
run_tool(ignored generate ${WORK_DIR}/five.gguf --layers 5 --force)
run_tool_failing(2 out ablation-plan ${WORK_DIR}/five.gguf --ablation ${DATA}/layer_ablation.json --count 1 --plan-out ${WORK_DIR}/bad.json)
expect("${out}" "^nashprune: error: the ablation file does not match the model: 4 layers units, the model has 5")
