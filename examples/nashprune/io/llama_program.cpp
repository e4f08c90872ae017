// Finding and running llama.cpp's programs.
#include "llama_program.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "command.hpp"

extern char** environ;

namespace nashprune_tool {

namespace fs = std::filesystem;

namespace {

/// A path given as a folder holding `program` or as the program itself.
fs::path program_in(const fs::path& given, std::string_view program) {
  return fs::is_directory(given) ? given / program : given;
}

}  // namespace

std::string find_llama_program(std::string_view program, const std::string& option) {
  std::vector<std::pair<std::string, fs::path>> candidates;
  if (!option.empty()) candidates.emplace_back("--llama-bin", program_in(option, program));
  if (const char* env = std::getenv("NASHPRUNE_LLAMA_BIN"); env != nullptr && *env != '\0') {
    candidates.emplace_back("NASHPRUNE_LLAMA_BIN", program_in(env, program));
  }
  for (const auto& [origin, path] : candidates) {
    if (::access(path.c_str(), X_OK) != 0) {
      throw usage_error(origin + ": no executable " + std::string(program) + " at '" +
                        path.string() + "'");
    }
    return path.string();
  }
#ifdef NASHPRUNE_LLAMA_BIN_DIR
  if (const auto built = fs::path(NASHPRUNE_LLAMA_BIN_DIR) / program;
      ::access(built.c_str(), X_OK) == 0) {
    return built.string();
  }
#endif
  if (const char* path_env = std::getenv("PATH"); path_env != nullptr) {
    std::stringstream dirs(path_env);
    for (std::string dir; std::getline(dirs, dir, ':');) {
      if (dir.empty()) continue;
      if (const auto path = fs::path(dir) / program; ::access(path.c_str(), X_OK) == 0) {
        return path.string();
      }
    }
  }
  throw usage_error(std::string(program) +
                    " not found: pass --llama-bin DIR or set NASHPRUNE_LLAMA_BIN "
                    "(cmake/provision-llama-cpp.sh builds one)");
}

namespace {

constexpr const char* openmp_wait_policy = "OMP_WAIT_POLICY";
constexpr const char* passive_waits = "PASSIVE";

std::vector<std::string> child_environment() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  if (std::getenv(openmp_wait_policy) == nullptr) {
    env.emplace_back(std::string(openmp_wait_policy) + "=" + passive_waits);
  }
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (auto& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

}  // namespace

void restart_with_passive_openmp_waits(char** argv) {
  if (std::getenv(openmp_wait_policy) != nullptr) return;
  if (setenv(openmp_wait_policy, passive_waits, 0) != 0) return;
  execv("/proc/self/exe", argv);
}

int run_to_file(std::vector<std::string> argv, const fs::path& log, const std::function<void()>& while_running) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  auto env = child_environment();
  const auto args = c_strings(argv);
  const auto envp = c_strings(env);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(spawned));
  }
  int status = 0;
  for (;;) {
    const pid_t ended = ::waitpid(pid, &status, while_running ? WNOHANG : 0);
    if (ended == pid) return status;
    if (ended < 0 && errno != EINTR) throw std::runtime_error("waiting for " + argv[0] + ": " + std::strerror(errno));
    if (ended == 0) {
      while_running();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

fs::path temporary_log(const std::string& prefix) {
  std::string pattern = (fs::temp_directory_path() / (prefix + "XXXXXX")).string();
  const int fd = ::mkstemp(pattern.data());
  if (fd < 0) throw std::runtime_error("cannot create a temporary log file: " + std::string(std::strerror(errno)));
  ::close(fd);
  return pattern;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

}  // namespace nashprune_tool
