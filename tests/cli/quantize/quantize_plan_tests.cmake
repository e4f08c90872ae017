# Command-line checks of `nashprune quantize-plan` (included by tests/cli/CMakeLists.txt with llama.cpp).
set(quantize_model "${NASHPRUNE_DATA_DIR}/stories260K.gguf")
set(quantize_check ${CMAKE_CURRENT_SOURCE_DIR}/check_cli.cmake)
set(quantize_out ${CMAKE_CURRENT_BINARY_DIR}/quantize_plan)
file(MAKE_DIRECTORY ${quantize_out})
function(nashprune_quantize_plan_test name code)
  add_test(NAME cli_quantize_plan_${name}
           COMMAND ${CMAKE_COMMAND} -DTOOL=$<TARGET_FILE:nashprune_tool> ${ARGN} -DEXPECT_CODE=${code} -P ${quantize_check})
  set_tests_properties(cli_quantize_plan_${name} PROPERTIES LABELS cli)
endfunction()
set(plan_txt ${quantize_out}/plan.txt)
nashprune_quantize_plan_test(valid 0 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;-o\;${plan_txt}"
  "-DSTDOUT_REGEX=note: q4_0 skipped for 5 tensor\\(s\\) whose rows its block of 32 does not divide: blk\\.0\\.ffn_down\\.weight \\(172\\).*predicted error [0-9.e+-]+, LP lower bound [0-9.e+-]+, gap.*llama-quantize --tensor-type-file")
# A tensor no candidate fits keeps F16.
nashprune_quantize_plan_test(fixed_f16 0 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--types\;q4_0,q8_0\;-o\;${plan_txt}"
  "-DSTDOUT_REGEX=note: blk\\.0\\.ffn_down\\.weight: no candidate type fits its rows of 172; it stays F16")
nashprune_quantize_plan_test(no_budget 2 "-DARGS=quantize-plan\;${quantize_model}\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: give exactly one of --bpw and --size")
nashprune_quantize_plan_test(bpw_too_small 2 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;2\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --bpw 2 is below the smallest plan's 6.667 bits per weight")
nashprune_quantize_plan_test(bpw_too_large 2 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;40\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --bpw 40 is above the largest plan's 16 bits per weight .*; the candidates reach \\[6\\.667, 16\\]$")
# The budget is checked before anything is measured: with --sensitivity measured (a
# minute or more of loss passes on stories260K) a budget out of reach is refused at once.
nashprune_quantize_plan_test(bpw_refused_before_measuring 2
  "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;2\;--sensitivity\;measured\;--text\;${NASHPRUNE_DATA_DIR}/tinystories-calibration.txt\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --bpw 2 is below the smallest plan's 6\\.667 bits per weight .*; the candidates reach \\[6\\.667, 16\\]$")
set_tests_properties(cli_quantize_plan_bpw_refused_before_measuring PROPERTIES TIMEOUT 30)
nashprune_quantize_plan_test(size_refused_before_measuring 2
  "-DARGS=quantize-plan\;${quantize_model}\;--size\;100000000\;--sensitivity\;scaled\;--text\;${NASHPRUNE_DATA_DIR}/tinystories-calibration.txt\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --size 100000000 is above the largest plan's file .*; the candidates allow files of [0-9]+ to [0-9]+ bytes$")
set_tests_properties(cli_quantize_plan_size_refused_before_measuring PROPERTIES TIMEOUT 30)
nashprune_quantize_plan_test(size_too_small 2 "-DARGS=quantize-plan\;${quantize_model}\;--size\;1000\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --size 1000 is below the smallest plan's file, [0-9]+ bytes")
nashprune_quantize_plan_test(size_too_large 2 "-DARGS=quantize-plan\;${quantize_model}\;--size\;100000000\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --size 100000000 is above the largest plan's file")
nashprune_quantize_plan_test(unknown_type 2 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--types\;q4_0,q9_0\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --types: unknown type 'q9_0'")
nashprune_quantize_plan_test(unsupported_type 2 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--types\;q4_0,q8_K\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --types: ggml does not quantize weights to 'q8_K'")
nashprune_quantize_plan_test(needs_imatrix 2 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--types\;iq2_xxs,q8_0\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --types: ggml quantizes to iq2_xxs only with an importance matrix")
nashprune_quantize_plan_test(skipped_type 0 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;12\;--types\;q4_K,q8_0,f16\;-o\;${plan_txt}"
  "-DSTDOUT_REGEX=note: q4_K skipped for 37 tensor\\(s\\) whose rows its block of 256 does not divide: token_embd\\.weight \\(64\\)")
nashprune_quantize_plan_test(bad_method 2 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--method\;greedy\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --method must be hull or quantile, got 'greedy'")
# An importance matrix or statistics of another model.
nashprune_quantize_plan_test(foreign_calibration 2
  "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--calibration\;${CMAKE_CURRENT_SOURCE_DIR}/quantize/testdata/tinystories656K-calibration.gguf\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: .*--calibration")
nashprune_quantize_plan_test(foreign_imatrix 2
  "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--imatrix\;${CMAKE_CURRENT_SOURCE_DIR}/quantize/testdata/tinystories656K-imatrix.gguf\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --imatrix .*tinystories656K-imatrix\\.gguf: '[a-z_.0-9]+' has 128 columns, the model's tensor 64")
# The allocation follows the costs it is given (--save-costs, --costs).
add_test(NAME cli_quantize_plan_follows_costs
         COMMAND ${CMAKE_COMMAND} -DTOOL=$<TARGET_FILE:nashprune_tool> -DMODEL=${quantize_model} -DWORK_DIR=${quantize_out}/costs
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/quantize/check_quantize_costs.cmake)
set_tests_properties(cli_quantize_plan_follows_costs PROPERTIES LABELS cli)
set(costs_data ${CMAKE_CURRENT_SOURCE_DIR}/quantize/testdata)
nashprune_quantize_plan_test(costs_of_other_types 2
  "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;7\;--types\;q4_0,q5_0\;--costs\;${costs_data}/costs-q4_0-q8_0.tsv\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --costs .*costs-q4_0-q8_0\\.tsv: line 1 is 'tensor\tq4_0\tq8_0', expected 'tensor\tq4_0\tq5_0'")
nashprune_quantize_plan_test(costs_of_another_model 2
  "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--types\;q4_0,q8_0\;--costs\;${costs_data}/costs-q4_0-q8_0.tsv\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --costs .*: line 2: expected the costs of token_embd\\.weight \\(costs of another model\\?\\)")
nashprune_quantize_plan_test(costs_missing 2
  "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--costs\;${quantize_out}/no-such-costs.tsv\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --costs: cannot read .*no-such-costs\\.tsv")
# The measured sensitivity's arguments.
set(calibration_text ${NASHPRUNE_DATA_DIR}/tinystories-calibration.txt)
nashprune_quantize_plan_test(bad_sensitivity 2 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--sensitivity\;hessian\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --sensitivity must be energy, measured or scaled, got 'hessian'")
nashprune_quantize_plan_test(measured_without_text 2 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--sensitivity\;measured\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --sensitivity measured needs --text")
nashprune_quantize_plan_test(text_without_measured 2 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--text\;${calibration_text}\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --text is read only with --sensitivity measured or scaled")
nashprune_quantize_plan_test(measured_text_missing 2
  "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--sensitivity\;measured\;--text\;${quantize_out}/no-such-text.txt\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --text: cannot read .*no-such-text\\.txt")
nashprune_quantize_plan_test(scaled_without_text 2 "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--sensitivity\;scaled\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --sensitivity scaled needs --text")
nashprune_quantize_plan_test(measured_with_costs 2
  "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--sensitivity\;measured\;--text\;${calibration_text}\;--costs\;${costs_data}/costs-q4_0-q8_0.tsv\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: give at most one of --costs and --sensitivity measured")
nashprune_quantize_plan_test(measured_with_calibration 2
  "-DARGS=quantize-plan\;${quantize_model}\;--bpw\;8\;--sensitivity\;measured\;--text\;${calibration_text}\;--calibration\;${costs_data}/tinystories656K-calibration.gguf\;-o\;${plan_txt}"
  "-DSTDERR_REGEX=^nashprune: error: --calibration weights the energy sensitivity")
# --run on a real model with the provisioned llama-quantize and llama-perplexity.
add_test(NAME llama_quantize_plan_run
         COMMAND ${CMAKE_COMMAND} -DTOOL=$<TARGET_FILE:nashprune_tool> -DLLAMA_BIN=${NASHPRUNE_LLAMA_BIN_DIR}
                 -DMODEL=${quantize_model} -DTEXT=${NASHPRUNE_DATA_DIR}/tinystories-evaluation.txt
                 -DWORK_DIR=${quantize_out}/run -P ${CMAKE_CURRENT_SOURCE_DIR}/quantize/check_quantize_run.cmake)
set_tests_properties(llama_quantize_plan_run PROPERTIES LABELS llama TIMEOUT 300)
# --sensitivity measured on the real model through llama.cpp.
add_test(NAME llama_quantize_plan_measured
         COMMAND ${CMAKE_COMMAND} -DTOOL=$<TARGET_FILE:nashprune_tool> -DMODEL=${quantize_model}
                 -DTEXT=${NASHPRUNE_DATA_DIR}/tinystories-calibration.txt -DWORK_DIR=${quantize_out}/measured
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/quantize/check_quantize_measured.cmake)
set_tests_properties(llama_quantize_plan_measured PROPERTIES LABELS llama TIMEOUT 600)
# inspect --quant: bytes per tensor kind after quantization, alone and after pruning.
add_test(NAME cli_inspect_quant
         COMMAND ${CMAKE_COMMAND} -DTOOL=$<TARGET_FILE:nashprune_tool> -DMODEL=${quantize_model} -DWORK_DIR=${quantize_out}/inspect
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/quantize/check_inspect_quant.cmake)
set_tests_properties(cli_inspect_quant PROPERTIES LABELS cli)
function(nashprune_inspect_quant_test name)
  add_test(NAME cli_inspect_quant_${name}
           COMMAND ${CMAKE_COMMAND} -DTOOL=$<TARGET_FILE:nashprune_tool> ${ARGN} -DEXPECT_CODE=2 -P ${quantize_check})
  set_tests_properties(cli_inspect_quant_${name} PROPERTIES LABELS cli)
endfunction()
nashprune_inspect_quant_test(missing "-DARGS=inspect\;${quantize_model}\;--quant\;${quantize_out}/no-such-types.txt"
  "-DSTDERR_REGEX=^nashprune: error: --quant: cannot read .*no-such-types\\.txt")
nashprune_inspect_quant_test(not_anchored "-DARGS=inspect\;${quantize_model}\;--quant\;${costs_data}/types-not-anchored.txt"
  "-DSTDERR_REGEX=^nashprune: error: --quant .*types-not-anchored\\.txt: line 2: expected \\^NAME\\$=TYPE")
nashprune_inspect_quant_test(unknown_type "-DARGS=inspect\;${quantize_model}\;--quant\;${costs_data}/types-unknown-type.txt"
  "-DSTDERR_REGEX=^nashprune: error: --quant .*: line 1: unknown type 'q9_0'")
nashprune_inspect_quant_test(other_model "-DARGS=inspect\;${quantize_model}\;--quant\;${costs_data}/types-other-model.txt"
  "-DSTDERR_REGEX=^nashprune: error: --quant .*: line 1: 'blk\\.9\\.attn_q\\.weight' is no tensor of the model")
nashprune_inspect_quant_test(rows_not_divisible "-DARGS=inspect\;${quantize_model}\;--quant\;${costs_data}/types-rows-not-divisible.txt"
  "-DSTDERR_REGEX=^nashprune: error: --quant .*types-rows-not-divisible\\.txt: .*row length 172 is not a multiple of the q4_0 block size 32.*blk\\.0\\.ffn_down\\.weight")
