#include "io/calibration_run.hpp"
#include "io/calibration_file.hpp"

#include "io/progress.hpp"

#include <memory>

#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
#include <calibrate/llama_capture.hpp>
#endif

namespace nashprune_tool {

#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
namespace {
calibrate::capture_options capture_options_of(const std::string& model, const text_run_args& run, bool moments) {
  calibrate::capture_options o;
  o.model = model;
  o.text = run.text;
  o.max_tokens = run.tokens;
  o.context = run.context;
  o.threads = run.threads;
  o.moments = moments;
  return o;
}
}  // namespace
#endif

calibrate::calibration_stats measure_calibration(const std::string& model, const text_run_args& run, bool moments,
                                                 [[maybe_unused]] const std::string& command) {
#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
  auto o = capture_options_of(model, run, moments);
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

calibrate::calibration_stats calibrate_into_file(const std::string& model, const text_run_args& run, const calibrate::moment_plan& plan,
                                                 const std::filesystem::path& output, bool force, [[maybe_unused]] const std::string& command) {
#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
  auto o = capture_options_of(model, run, true);
  std::unique_ptr<progress_bar> bar;
  o.progress = [&](std::uint64_t done, std::uint64_t total) { bar->update(done, total); };
  const auto passes = plan.groups.size();
  return calibrate::calibrate_to_file(o, plan, output, force, [&](std::size_t pass) {
    bar.reset();  // the previous pass's line first
    bar = std::make_unique<progress_bar>(passes == 1 ? "calibrating on " + run.text
                                                     : "calibrating on " + run.text + ", pass " + std::to_string(pass + 1) + " of " +
                                                           std::to_string(passes),
                                         progress_bar::off_terminal::stage_line);
  });
#else
  (void)model;
  (void)run;
  (void)plan;
  (void)output;
  (void)force;
  requires_llama_cpp(command);
#endif
}

}  // namespace nashprune_tool
