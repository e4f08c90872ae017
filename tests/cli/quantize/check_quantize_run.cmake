# quantize-plan --run on a real model: llama-quantize writes the planned types
# within the --size budget, and llama-perplexity loads the result and gives a
# finite perplexity on a few chunks of the evaluation text.
# cmake -DTOOL=... -DLLAMA_BIN=... -DMODEL=... -DTEXT=... -DWORK_DIR=... -P check_quantize_run.cmake
if(NOT EXISTS "${MODEL}" OR NOT EXISTS "${TEXT}")
  message("skipped: ${MODEL} or ${TEXT} is absent")
  return()
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
# The uniform q5_0 file's size (llama-quantize --pure) as the budget.
execute_process(COMMAND "${LLAMA_BIN}/llama-quantize" --pure "${MODEL}" "${WORK_DIR}/uniform.gguf" Q5_0
                RESULT_VARIABLE code OUTPUT_QUIET ERROR_QUIET)
if(NOT code EQUAL 0)
  message(FATAL_ERROR "llama-quantize --pure Q5_0 failed: ${code}")
endif()
file(SIZE "${WORK_DIR}/uniform.gguf" budget)
execute_process(COMMAND "${TOOL}" quantize-plan "${MODEL}" --size ${budget} -o "${WORK_DIR}/plan.txt"
                        --run "${WORK_DIR}/planned.gguf" --llama-bin "${LLAMA_BIN}"
                RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT code EQUAL 0)
  message(FATAL_ERROR "quantize-plan --run failed (${code}):\n${out}\n${err}")
endif()
if(NOT out MATCHES "llama-quantize wrote [^\n]*: ([0-9]+) bytes \\(predicted ([0-9]+)\\), budget ${budget}")
  message(FATAL_ERROR "no size report:\n${out}")
endif()
set(written ${CMAKE_MATCH_1})
set(predicted ${CMAKE_MATCH_2})
file(SIZE "${WORK_DIR}/planned.gguf" actual)
if(NOT actual EQUAL written OR actual GREATER budget OR NOT predicted EQUAL actual)
  message(FATAL_ERROR "file ${actual} bytes, reported ${written}, predicted ${predicted}, budget ${budget}")
endif()
file(STRINGS "${WORK_DIR}/plan.txt" lines)
list(LENGTH lines count)
if(count LESS 10)
  message(FATAL_ERROR "plan.txt has ${count} lines:\n${lines}")
endif()
set(ENV{OMP_WAIT_POLICY} PASSIVE)
execute_process(COMMAND "${LLAMA_BIN}/llama-perplexity" -m "${WORK_DIR}/planned.gguf" -f "${TEXT}" -c 128 -b 128 --chunks 4
                OUTPUT_FILE "${WORK_DIR}/ppl.log" ERROR_FILE "${WORK_DIR}/ppl.log" RESULT_VARIABLE code)
file(READ "${WORK_DIR}/ppl.log" log)
if(NOT code EQUAL 0 OR NOT log MATCHES "Final estimate: PPL = ([0-9]+\\.[0-9]+)")
  message(FATAL_ERROR "llama-perplexity on the planned model failed (${code}); see ${WORK_DIR}/ppl.log")
endif()
message("planned model: ${actual} bytes (budget ${budget}), perplexity ${CMAKE_MATCH_1} on 4 chunks")
