# The conventions every subcommand shares. Each subcommand that `nashprune --help`
# lists has an example line and the exit-code line in its --help, spells its
# threads, context length and written file -t/--threads, -c/--ctx, -o/--output
# as llama.cpp does, and the exit
# codes are what that line says: 0 success, 1 runtime failure, 2 usage error or
# bad input (an unknown option, a missing or malformed input file, a JSON input
# lacking a field), each with one line on stderr.
# cmake -DTOOL=... -DWORK_DIR=... -P check_conventions.cmake
file(MAKE_DIRECTORY ${WORK_DIR})
set(exit_line "Exit codes: 0 success; 1 runtime failure \\(I/O, llama.cpp, a failed check\\); 2 usage error or bad input")

include(${CMAKE_CURRENT_LIST_DIR}/cli_checks.cmake)
run_tool(top --help)
expect("${top}" "${exit_line}")
string(REGEX MATCH "(SUBCOMMANDS|Subcommands):\n(.*)" listed "${top}")
string(REGEX MATCHALL "\n  [a-z][a-z-]*" names "\n${CMAKE_MATCH_2}")
list(LENGTH names count)
if(count LESS 12)
  message(FATAL_ERROR "nashprune --help lists ${count} subcommands, expected at least 12:\n${top}")
endif()
foreach(name IN LISTS names)
  string(STRIP "${name}" name)
  run_tool(help ${name} --help)
  if(NOT help MATCHES "\nExample:\n  nashprune ${name}( [^\n]*)?\n")
    message(FATAL_ERROR "nashprune ${name} --help shows no example line 'nashprune ${name} ...':\n${help}")
  endif()
  if(NOT help MATCHES "${exit_line}")
    message(FATAL_ERROR "nashprune ${name} --help does not state the exit codes:\n${help}")
  endif()
  # llama.cpp's spellings: a subcommand with threads, a context length or a written
  # file takes them as -t/--threads, -c/--ctx and -o/--output.
  foreach(pair "threads;t" "ctx;c" "output;o")
    list(GET pair 0 long)
    list(GET pair 1 short)
    if(help MATCHES "--${long}[ ,=]" AND NOT help MATCHES "\n  -${short},--${long}[ ,=]")
      message(FATAL_ERROR "nashprune ${name} --help has --${long} without -${short}:\n${help}")
    endif()
  endforeach()
endforeach()

# run(CODE STDERR_REGEX args...): TOOL exits with CODE and prints one stderr line matching STDERR_REGEX.
function(run expect_code stderr_regex)
  if(expect_code EQUAL 0)
    run_tool(ignored ${ARGN})
    return()
  endif()
  run_tool_failing(${expect_code} err ${ARGN})
  string(REGEX REPLACE "\n$" "" line "${err}")
  if(line MATCHES "\n" OR NOT line MATCHES "${stderr_regex}")
    message(FATAL_ERROR "nashprune ${ARGN}: stderr is not one line matching '${stderr_regex}':\n${err}")
  endif()
endfunction()

set(model ${WORK_DIR}/generated.gguf)
run(0 "" generate ${model} --force)
run(0 "" generate -o ${WORK_DIR}/by_option.gguf --force)
run(0 "" version)
# 2: usage errors and bad input.
run(2 "^nashprune: error: .*--no-such-option" prune --no-such-option)
run(2 "^nashprune: error: .*check_conventions.cmake: offset 0: " inspect ${CMAKE_CURRENT_LIST_FILE})
run(2 "^nashprune: error: .*missing.gguf: cannot open" inspect ${WORK_DIR}/missing.gguf)
file(WRITE ${WORK_DIR}/fieldless.json "{}\n")
run(2 "^nashprune: error: JSON input: .*'units' not found" ablation-plan ${model} --ablation ${WORK_DIR}/fieldless.json -o ${WORK_DIR}/plan.json)
# 1: runtime failures (a file that cannot be written, a llama.cpp program that fails).
run(1 "^nashprune: failed: .*no-such-dir: cannot create a temporary file" generate ${WORK_DIR}/no-such-dir/out.gguf)
file(WRITE ${WORK_DIR}/text.txt "Once upon a time there was a little dog.\n")
run(1 "^nashprune: failed: llama-perplexity on the original model" eval ${model} ${model} --text ${WORK_DIR}/text.txt --llama-bin /bin/false --no-speed)
