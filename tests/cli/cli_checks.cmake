# Helpers of the command-line check scripts (cmake -P): TOOL is the nashprune binary.
# run_tool(OUT args...): runs TOOL, fails unless it exits 0; OUT = its stdout.
# run_tool_failing(CODE ERR args...): fails unless TOOL exits with CODE; ERR = its stderr.
# expect(TEXT REGEX): fails unless TEXT matches REGEX.
function(run_tool out_var)
  execute_process(COMMAND ${TOOL} ${ARGN} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "${ARGN}: exit code ${code}\nstdout: ${out}\nstderr: ${err}")
  endif()
  set(${out_var} "${out}" PARENT_SCOPE)
endfunction()

function(run_tool_failing expect_code err_var)
  execute_process(COMMAND ${TOOL} ${ARGN} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT code EQUAL expect_code)
    message(FATAL_ERROR "${ARGN}: exit code ${code}, expected ${expect_code}\nstdout: ${out}\nstderr: ${err}")
  endif()
  set(${err_var} "${err}" PARENT_SCOPE)
endfunction()

function(expect text regex)
  if(NOT text MATCHES "${regex}")
    message(FATAL_ERROR "output does not match '${regex}':\n${text}")
  endif()
endfunction()
