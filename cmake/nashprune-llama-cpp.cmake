# A llama.cpp tree provisioned by cmake/provision-llama-cpp.sh, as imported targets.
#
# Set NASHPRUNE_LLAMA_CPP_DIR to the path that script prints. When it is set, this
# file defines
#   nashprune_llama_cpp::ggml_base  libggml-base (ggml_type_size, ggml_blck_size, ...)
#   nashprune_llama_cpp::llama      libllama with its ggml backends
#   NASHPRUNE_LLAMA_BIN_DIR         the folder of llama-perplexity, llama-imatrix, llama-quantize
#   NASHPRUNE_LLAMA_NODE_MODULES    node_modules holding @huggingface/gguf
# and NASHPRUNE_HAVE_LLAMA_CPP = ON; otherwise only NASHPRUNE_HAVE_LLAMA_CPP = OFF.
# An incomplete tree is a configure error, not a silent skip.
set(NASHPRUNE_LLAMA_CPP_DIR "" CACHE PATH
    "llama.cpp tree from cmake/provision-llama-cpp.sh: enables the 'llama' tests and 'nashprune calibrate'")
set(NASHPRUNE_HAVE_LLAMA_CPP OFF)
if(NOT NASHPRUNE_LLAMA_CPP_DIR)
  return()
endif()

set(_llama_root "${NASHPRUNE_LLAMA_CPP_DIR}")
if(NOT EXISTS "${_llama_root}/provisioned")
  message(FATAL_ERROR "NASHPRUNE_LLAMA_CPP_DIR=${_llama_root} is not a complete provisioned tree "
                      "(no 'provisioned' stamp): run cmake/provision-llama-cpp.sh and pass the path it prints")
endif()
set(NASHPRUNE_LLAMA_BIN_DIR "${_llama_root}/build/bin")
set(NASHPRUNE_LLAMA_NODE_MODULES "${_llama_root}/node/node_modules")

function(_nashprune_import_llama_library target file)
  set(path "${NASHPRUNE_LLAMA_BIN_DIR}/${CMAKE_SHARED_LIBRARY_PREFIX}${file}${CMAKE_SHARED_LIBRARY_SUFFIX}")
  if(NOT EXISTS "${path}")
    message(FATAL_ERROR "the provisioned llama.cpp tree lacks ${path}")
  endif()
  add_library(${target} SHARED IMPORTED GLOBAL)
  set_target_properties(${target} PROPERTIES IMPORTED_LOCATION "${path}"
    INTERFACE_INCLUDE_DIRECTORIES "${_llama_root}/src/include;${_llama_root}/src/ggml/include")
endfunction()

_nashprune_import_llama_library(nashprune_llama_cpp::ggml_base ggml-base)
_nashprune_import_llama_library(nashprune_llama_cpp::ggml ggml)
_nashprune_import_llama_library(nashprune_llama_cpp::llama llama)
set_target_properties(nashprune_llama_cpp::ggml PROPERTIES
  INTERFACE_LINK_LIBRARIES nashprune_llama_cpp::ggml_base)
set_target_properties(nashprune_llama_cpp::llama PROPERTIES
  INTERFACE_LINK_LIBRARIES nashprune_llama_cpp::ggml)

foreach(program llama-perplexity llama-imatrix llama-quantize)
  if(NOT EXISTS "${NASHPRUNE_LLAMA_BIN_DIR}/${program}")
    message(FATAL_ERROR "the provisioned llama.cpp tree lacks ${NASHPRUNE_LLAMA_BIN_DIR}/${program}")
  endif()
endforeach()
set(NASHPRUNE_HAVE_LLAMA_CPP ON)
message(STATUS "nashprune: llama.cpp from ${_llama_root}")
