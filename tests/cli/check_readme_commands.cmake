# Runs every `nashprune ...` command of README.md's shell blocks on the bundled
# model and texts, in order, and fails when one exits non-zero or prints an
# internal error: a message of the library's internals ("argument '...'", "lies
# outside", "total cost"), an exception's type name, or a stderr line that is not
# a deprecation warning. Placeholders become files: model.gguf the bundled
# stories260K, calibration.txt / evaluation.txt the bundled texts (EVALUATION_TEXT,
# when given, for the latter), every other *.gguf, *.txt, *.html or *.json name a
# file in WORK_DIR.
# An example sized for real models that the tiny bundled one cannot meet may be
# refused with exit code 2 and a one-line usage message naming an option, except a
# prune command. With LLAMA=0 the commands that need llama.cpp (calibrate, eval) and those that
# read their outputs are left out.
# cmake -DTOOL=... -DREADME=... -DDATA=... -DWORK_DIR=... -DLLAMA=0|1 [-DEVALUATION_TEXT=...] -P check_readme_commands.cmake
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
if(NOT EVALUATION_TEXT)
  set(EVALUATION_TEXT ${DATA}/tinystories-evaluation.txt)
endif()
file(READ ${README} content)
string(REPLACE ";" "," content "${content}")                 # no shell block needs one; cmake lists split on it
string(REGEX REPLACE "\\\\\n[ ]*" " " content "${content}")  # continuation lines
string(REPLACE "\n" ";" lines "${content}")
set(in_block FALSE)
set(commands)
foreach(line IN LISTS lines)
  if(line MATCHES "^```sh")
    set(in_block TRUE)
    continue()
  elseif(line MATCHES "^```")
    set(in_block FALSE)
    continue()
  endif()
  if(NOT in_block)
    continue()
  endif()
  string(REGEX REPLACE "[ ]+#.*$" "" line "${line}")  # trailing comments
  string(STRIP "${line}" line)
  if(line MATCHES "^nashprune ")
    list(APPEND commands "${line}")
  endif()
endforeach()
list(LENGTH commands count)
if(count EQUAL 0)
  message(FATAL_ERROR "no nashprune command found in the shell blocks of ${README}")
endif()

set(ran 0)
foreach(command IN LISTS commands)
  separate_arguments(words UNIX_COMMAND "${command}")
  list(REMOVE_AT words 0)  # "nashprune"
  list(GET words 0 subcommand)
  set(needs_llama FALSE)
  # Calibration (also prune's in-process --text) and perplexity (--eval-text) run llama.cpp.
  if(subcommand STREQUAL "calibrate" OR subcommand STREQUAL "eval" OR command MATCHES "stats\\.gguf|--text |--eval-text ")
    set(needs_llama TRUE)
  endif()
  if(needs_llama AND NOT LLAMA)
    message(STATUS "left out (needs llama.cpp): ${command}")
    continue()
  endif()
  set(args)
  foreach(word IN LISTS words)
    if(word STREQUAL "model.gguf")
      set(word ${DATA}/stories260K.gguf)
    elseif(word STREQUAL "calibration.txt")
      set(word ${DATA}/tinystories-calibration.txt)
    elseif(word STREQUAL "evaluation.txt")
      set(word ${EVALUATION_TEXT})
    elseif(word MATCHES "^[A-Za-z0-9_.-]+\\.(gguf|txt|html|json)$")
      set(word ${WORK_DIR}/${word})
    endif()
    list(APPEND args "${word}")
  endforeach()
  execute_process(COMMAND ${TOOL} ${args} WORKING_DIRECTORY ${WORK_DIR} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  # A README example sized for real models may be refused on the tiny bundled one, but
  # only with a usage message naming an option (never a prune command: its targets
  # must hold on the bundled model).
  if(code EQUAL 2 AND NOT subcommand STREQUAL "prune" AND err MATCHES "^nashprune: error: --[a-z-]+ [^\n]*\n?$")
    message(STATUS "refused on the bundled model with a usage message: ${command}: ${err}")
    continue()
  endif()
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "'${command}' exited with ${code}\nstdout: ${out}\nstderr: ${err}")
  endif()
  set(everything "${out}\n${err}")
  foreach(internal "argument '" "lies outside" "total cost" "std::" "basic_string" "what\\(\\)" "terminate called")
    if(everything MATCHES "${internal}")
      message(FATAL_ERROR "'${command}' printed an internal message (${internal}):\nstdout: ${out}\nstderr: ${err}")
    endif()
  endforeach()
  string(REGEX REPLACE "\n$" "" err_lines "${err}")
  string(REPLACE "\n" ";" err_lines "${err_lines}")
  foreach(line IN LISTS err_lines)
    # Progress bars redraw one line with carriage returns; warnings are allowed, errors are not.
    if(line MATCHES "error|failed|Error|exception")
      message(FATAL_ERROR "'${command}' printed an error on stderr:\n${err}")
    endif()
  endforeach()
  math(EXPR ran "${ran} + 1")
endforeach()
message(STATUS "${ran} README commands ran cleanly")
