# quantize-plan allocates by the costs it is given: a costs table (--save-costs,
# then rewritten) in which every tensor's q4_0 costs 1 and its q8_0 0, except one
# tensor whose q4_0 costs 1000, with a --size budget that leaves room for one
# upgrade of that tensor's bytes, must give that tensor alone q8_0. An allocator
# that ignored the costs (or read them out of order) would upgrade another.
# cmake -DTOOL=... -DMODEL=... -DWORK_DIR=... -P check_quantize_costs.cmake
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(special "blk.2.attn_k.weight")
execute_process(COMMAND "${TOOL}" quantize-plan "${MODEL}" --bpw 8 --types q4_0,q8_0 -o "${WORK_DIR}/energy.txt"
                        --save-costs "${WORK_DIR}/energy.tsv"
                RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT code EQUAL 0)
  message(FATAL_ERROR "quantize-plan --save-costs failed (${code}):\n${out}\n${err}")
endif()
file(STRINGS "${WORK_DIR}/energy.tsv" lines)
list(GET lines 0 header)
if(NOT header STREQUAL "tensor\tq4_0\tq8_0")
  message(FATAL_ERROR "costs header: '${header}'")
endif()
set(rewritten "${header}\n")
set(found FALSE)
list(REMOVE_AT lines 0)
foreach(line IN LISTS lines)
  string(REPLACE "\t" ";" fields "${line}")
  list(GET fields 0 name)
  list(GET fields 1 q4)
  if(q4 STREQUAL "inf")
    string(APPEND rewritten "${name}\tinf\tinf\n")
  elseif(name STREQUAL special)
    string(APPEND rewritten "${name}\t1000\t0\n")
    set(found TRUE)
  else()
    string(APPEND rewritten "${name}\t1\t0\n")
  endif()
endforeach()
if(NOT found)
  message(FATAL_ERROR "${special} is not in the costs table")
endif()
file(WRITE "${WORK_DIR}/costs.tsv" "${rewritten}")
# The smallest file (every tensor at q4_0), from the refusal of a budget below it.
execute_process(COMMAND "${TOOL}" quantize-plan "${MODEL}" --size 1000 --types q4_0,q8_0 --costs "${WORK_DIR}/costs.tsv" -o "${WORK_DIR}/plan.txt"
                RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT code EQUAL 2 OR NOT err MATCHES "smallest plan's file, ([0-9]+) bytes")
  message(FATAL_ERROR "expected the smallest file in a usage error (${code}):\n${err}")
endif()
# 64x32 weights: q4_0 1152 bytes, q8_0 2176: one upgrade of that shape fits, two do not.
math(EXPR budget "${CMAKE_MATCH_1} + 1024 + 512")
execute_process(COMMAND "${TOOL}" quantize-plan "${MODEL}" --size ${budget} --types q4_0,q8_0 --costs "${WORK_DIR}/costs.tsv" -o "${WORK_DIR}/plan.txt"
                RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT code EQUAL 0)
  message(FATAL_ERROR "quantize-plan --costs failed (${code}):\n${out}\n${err}")
endif()
file(STRINGS "${WORK_DIR}/plan.txt" planned REGEX "=q8_0$")
string(REPLACE "." "\\." special_pattern "${special}")
if(NOT planned STREQUAL "^${special_pattern}$=q8_0")
  message(FATAL_ERROR "expected ${special} alone at q8_0, got: ${planned}\n${out}")
endif()
if(NOT out MATCHES "${special_pattern} +64x32 +costs file +q8_0")
  message(FATAL_ERROR "the report does not show ${special} at q8_0 from the costs file:\n${out}")
endif()
