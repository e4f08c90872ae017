// The tool may use every glue and third-party headers.
#include "gguf/glue.hpp"
#include <calibrate/stats.hpp>
#include <CLI/CLI.hpp>
#include "missing.hpp"
