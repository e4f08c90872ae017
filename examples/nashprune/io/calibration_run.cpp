#include "io/calibration_run.hpp"

#include "io/progress.hpp"

#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
#include <calibrate/llama_capture.hpp>
#endif

namespace nashprune_tool {

calibrate::calibration_stats measure_calibration(const std::string& model, const text_run_args& run, bool moments,
                                                 [[maybe_unused]] const std::string& command) {
#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
  calibrate::capture_options o;
  o.model = model;
  o.text = run.text;
  o.max_tokens = run.tokens;
  o.context = run.context;
  o.threads = run.threads;
  o.moments = moments;
  progress_bar bar("calibrating on " + run.text, progress_bar::off_terminal::stage_line);
  o.progress = [&](std::uint64_t done, std::uint64_t total) { bar.update(done, total); };
  return calibrate::run_calibration(o);
#else
  (void)model;
  (void)run;
  (void)moments;
  requires_llama_cpp(command);
#endif
}

}  // namespace nashprune_tool
