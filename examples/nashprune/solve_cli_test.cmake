# ctest driver for `nashprune solve`: runs the tool on testdata/ and checks the
# exit code, stdout and stderr. Invoked as
#   cmake -DTOOL=<nashprune> -DDATA=<testdata dir> -P solve_cli_test.cmake
function(run_tool expect_code)
  cmake_parse_arguments(RUN "" "INPUT;STDOUT;STDERR" "ARGS" ${ARGN})
  set(input_args)
  if(RUN_INPUT)
    set(input_args INPUT_FILE ${RUN_INPUT})
  endif()
  execute_process(COMMAND ${TOOL} solve ${RUN_ARGS} ${input_args}
                  RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT code EQUAL expect_code)
    message(FATAL_ERROR "solve ${RUN_ARGS}: exit code ${code}, expected ${expect_code}\nstdout: ${out}\nstderr: ${err}")
  endif()
  if(RUN_STDOUT AND NOT out MATCHES "${RUN_STDOUT}")
    message(FATAL_ERROR "solve ${RUN_ARGS}: stdout does not match '${RUN_STDOUT}':\n${out}")
  endif()
  if(RUN_STDERR)
    if(NOT err MATCHES "${RUN_STDERR}")
      message(FATAL_ERROR "solve ${RUN_ARGS}: stderr does not match '${RUN_STDERR}':\n${err}")
    endif()
    string(REGEX MATCHALL "\n" newlines "${err}")
    list(LENGTH newlines lines)
    if(NOT lines EQUAL 1)
      message(FATAL_ERROR "solve ${RUN_ARGS}: expected one line on stderr, got ${lines}:\n${err}")
    endif()
  endif()
endfunction()

# A batch from a file: the one-head layer settles at s = 1/2 (the seed's rule would stay at 1).
run_tool(0 ARGS ${DATA}/solve_batch.json --solver active-set --tol 1e-12
         STDOUT "\"converged\": true,[^}]*\"s\": \\[\n *0\\.5\n")
# Every solver by name, reading stdin.
foreach(solver seed projected-gradient best-response accelerated active-set)
  run_tool(0 ARGS --solver ${solver} --max-iter 5000 INPUT ${DATA}/solve_batch.json STDOUT "\"solver\": \"${solver}\"")
endforeach()
run_tool(0 ARGS --solver seed INPUT ${DATA}/solve_batch.json STDOUT "\"iterations\": 1,")
# Bad input: exit code 2, one line naming the field.
run_tool(2 ARGS ${DATA}/solve_malformed.json STDERR "^nashprune: error: .*malformed JSON")
run_tool(2 INPUT ${DATA}/solve_malformed.json STDERR "<stdin>: malformed JSON")
run_tool(2 ARGS ${DATA}/solve_bad_lambda.json STDERR "'layers\\[1\\]\\.lambda'")
run_tool(2 ARGS ${DATA}/solve_missing_field.json STDERR "field 'redundancy': is missing")
run_tool(2 ARGS ${DATA}/solve_batch.json --solver newton STDERR "unknown solver 'newton'")
run_tool(2 ARGS ${DATA}/solve_batch.json --tol -1 STDERR "'tolerance'")
