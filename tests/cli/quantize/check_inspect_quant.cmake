# nashprune inspect --quant: the bytes per tensor kind after a quantization plan,
# alone and after a pruning plan, against the figures the other commands print:
# the total after quantizing is the planned tensors' bytes quantize-plan reports
# plus the tensors it leaves alone (the F32 norms), and the pruned column's total
# is the pruned model's tensor bytes as inspect reports them for that file.
# cmake -DTOOL=... -DMODEL=... -DWORK_DIR=... -P check_inspect_quant.cmake
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
function(run_tool)
  execute_process(COMMAND "${TOOL}" ${ARGN} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "nashprune ${ARGN} failed (${code}):\n${out}\n${err}")
  endif()
  set(out "${out}" PARENT_SCOPE)
endfunction()
# The norms' bytes (not planned): every *_norm.weight, F32.
run_tool(inspect "${MODEL}")
if(NOT out MATCHES "tensor bytes: ([0-9]+)")
  message(FATAL_ERROR "no tensor bytes:\n${out}")
endif()
set(model_bytes ${CMAKE_MATCH_1})
# stories260K: output_norm and 5 x (attn_norm, ffn_norm), 64 F32 each.
set(norm_bytes 2816)

# Quantization alone.
run_tool(quantize-plan "${MODEL}" --bpw 8 -o "${WORK_DIR}/types.txt")
if(NOT out MATCHES "tensors, [0-9]+ weights, ([0-9]+) bytes")
  message(FATAL_ERROR "no planned bytes:\n${out}")
endif()
math(EXPR expected "${CMAKE_MATCH_1} + ${norm_bytes}")
run_tool(inspect "${MODEL}" --quant "${WORK_DIR}/types.txt")
if(NOT out MATCHES "\ntotal +48 +${model_bytes} +${expected} +[0-9.]+ %")
  message(FATAL_ERROR "expected a total of ${model_bytes} -> ${expected} bytes:\n${out}")
endif()
if(NOT out MATCHES "\nattn_norm.weight +5 +1280 +1280 +0.0 %")
  message(FATAL_ERROR "the norms are not left alone:\n${out}")
endif()

# Pruning then quantization: the pruned model's own type file.
run_tool(prune "${MODEL}" "${WORK_DIR}/pruned.gguf" --unit heads --target 0.25 --structures groups --plan-out "${WORK_DIR}/plan.json")
run_tool(inspect "${WORK_DIR}/pruned.gguf")
if(NOT out MATCHES "tensor bytes: ([0-9]+)")
  message(FATAL_ERROR "no tensor bytes of the pruned model:\n${out}")
endif()
set(pruned_bytes ${CMAKE_MATCH_1})
run_tool(quantize-plan "${WORK_DIR}/pruned.gguf" --bpw 8 -o "${WORK_DIR}/pruned-types.txt")
if(NOT out MATCHES "tensors, [0-9]+ weights, ([0-9]+) bytes")
  message(FATAL_ERROR "no planned bytes:\n${out}")
endif()
math(EXPR expected "${CMAKE_MATCH_1} + ${norm_bytes}")
run_tool(inspect "${MODEL}" --plan "${WORK_DIR}/plan.json" --quant "${WORK_DIR}/pruned-types.txt")
if(NOT out MATCHES "\ntotal +48 +${model_bytes} +${pruned_bytes} +${expected} +[0-9.]+ %")
  message(FATAL_ERROR "expected a total of ${model_bytes} -> ${pruned_bytes} (pruned) -> ${expected} bytes:\n${out}")
endif()
if(pruned_bytes EQUAL model_bytes)
  message(FATAL_ERROR "the pruning plan removed nothing")
endif()
message("inspect --quant: ${model_bytes} -> ${pruned_bytes} -> ${expected} bytes")
