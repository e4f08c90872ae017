# Fails unless README holds SOURCE verbatim inside a ```cpp block.
file(READ "${README}" readme)
file(READ "${SOURCE}" source)
string(FIND "${readme}" "```cpp\n${source}```" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${README} does not show ${SOURCE} verbatim in a ```cpp block: copy the file into the README's C++ quick start")
endif()
