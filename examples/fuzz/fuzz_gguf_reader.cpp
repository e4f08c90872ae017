// libFuzzer target for the GGUF reader: any input must parse or raise
// gguf::format_error, and every tensor view must lie inside the input.
#include <gguf/gguf.hpp>

#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto r = gguf::reader::parse(std::span(reinterpret_cast<const std::byte*>(data), size), "fuzz");
    for (const auto& t : r.tensors()) {
      const auto* begin = reinterpret_cast<const std::byte*>(data);
      if (t.data.data() < begin || t.data.data() + t.data.size() > begin + size) std::abort();
    }
    for (const auto& [key, v] : r.metadata()) (void)gguf::to_string(v);
  } catch (const gguf::format_error&) {
  }
  return 0;
}
