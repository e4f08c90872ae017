# Runs CHECK (check_includes) on ROOT, a tree of planted violations, and fails
# unless it exits 1 and prints exactly EXPECTED: every violation found, at its
# file and line, and nothing else.
# cmake -DCHECK=... -DROOT=... -DEXPECTED=... -P expect_violations.cmake
execute_process(COMMAND ${CHECK} ${ROOT} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
file(READ ${EXPECTED} expected)
if(NOT code EQUAL 1 OR NOT out STREQUAL expected)
  message(FATAL_ERROR "check_includes ${ROOT}: exit code ${code} (expected 1)\nprinted:\n${out}${err}\nexpected:\n${expected}")
endif()
