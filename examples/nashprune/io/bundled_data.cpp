#include "io/bundled_data.hpp"

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace nashprune_tool {

bundled_data find_bundled_data() {
  namespace fs = std::filesystem;
  const char* env = std::getenv("NASHPRUNE_DATA_DIR");
  const bool from_env = env != nullptr && *env != '\0';
  const fs::path dir = from_env ? fs::path(env) : fs::path(NASHPRUNE_BUNDLED_DATA_DIR);
  const bundled_data data{dir / "stories260K.gguf", dir / "tinystories-calibration.txt", dir / "tinystories-evaluation.txt"};
  for (const auto& file : {data.model, data.calibration_text, data.evaluation_text}) {
    std::error_code ec;
    if (!fs::is_regular_file(file, ec)) {
      throw std::runtime_error("the bundled data " + file.string() + " is missing (" +
                               (from_env ? std::string("$NASHPRUNE_DATA_DIR") : std::string("the source tree's examples/data")) +
                               "; set NASHPRUNE_DATA_DIR to a folder holding stories260K.gguf and the tinystories texts)");
    }
  }
  return data;
}

}  // namespace nashprune_tool
