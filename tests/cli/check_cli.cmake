# Runs one nashprune command line and checks its exit code, that stdout matches
# STDOUT_REGEX and that stderr is one line matching STDERR_REGEX (when given).
# cmake -DTOOL=... -DARGS="a;b" -DEXPECT_CODE=2 [-DSTDIN_FILE=...] [-DSTDOUT_REGEX=...] [-DSTDERR_REGEX=...]
#       -P check_cli.cmake
set(input_args)
if(DEFINED STDIN_FILE)
  set(input_args INPUT_FILE ${STDIN_FILE})
endif()
execute_process(COMMAND ${TOOL} ${ARGS} ${input_args} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT code EQUAL EXPECT_CODE)
  message(FATAL_ERROR "exit code ${code}, expected ${EXPECT_CODE}\nstdout: ${out}\nstderr: ${err}")
endif()
if(DEFINED STDOUT_REGEX AND NOT out MATCHES "${STDOUT_REGEX}")
  message(FATAL_ERROR "stdout does not match '${STDOUT_REGEX}':\n${out}")
endif()
if(DEFINED STDERR_REGEX)
  string(REGEX REPLACE "\n$" "" line "${err}")
  if(line MATCHES "\n" OR NOT line MATCHES "${STDERR_REGEX}")
    message(FATAL_ERROR "stderr is not one line matching '${STDERR_REGEX}':\n${err}")
  endif()
endif()
