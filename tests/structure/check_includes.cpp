// check_includes ROOT: the include structure of the tree under ROOT, drawn from
// its #include lines. Every include is resolved as the build resolves it (a
// quoted name first beside the including file, then on the include path of its
// tree: include/ for the library; examples/, examples/nashprune/ and include/
// for the tool) and must point where its tree may depend:
//   - nothing includes a file of tests/;
//   - include/ includes only include/, the standard library, Eigen and the
//     SIMD intrinsics headers;
//   - include/nashprune/detail/ includes only detail/ and the leaf public headers
//     (those that include no library header but config.hpp), so detail/
//     depends only downward;
//   - examples/gguf/ includes only the library and itself; examples/calibrate/
//     the library, the GGUF glue and itself; the other glue (report/, quantize/,
//     fuzz/) the library, the GGUF and calibration glue and itself; the tool
//     (examples/nashprune/) the library and anything of examples/;
//   - no CMakeLists.txt of examples/ builds a source of tests/.
// Prints one line per offending line, FILE:LINE: what: why, and exits 1 when
// there is one, 2 on a usage error, 0 otherwise.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct include_line {
  fs::path file;
  int line = 0;
  bool angle = false;
  std::string name;
};

bool is_source(const fs::path& p) {
  static const std::vector<std::string> endings{".hpp", ".cpp", ".h", ".inl", ".cc"};
  return std::find(endings.begin(), endings.end(), p.extension().string()) != endings.end();
}

std::vector<include_line> includes_of(const fs::path& file) {
  static const std::regex directive(R"(^\s*#\s*include\s*([<"])([^>"]+)[>"])");
  std::vector<include_line> out;
  std::ifstream in(file);
  std::string text;
  for (int n = 1; std::getline(in, text); ++n) {
    std::smatch m;
    if (std::regex_search(text, m, directive)) out.push_back({file, n, m[1] == "<", m[2]});
  }
  return out;
}

// `child` lies inside `dir` (both canonical).
bool inside(const fs::path& child, const fs::path& dir) {
  const auto rel = child.lexically_relative(dir);
  return !rel.empty() && *rel.begin() != "..";
}

class tree {
 public:
  explicit tree(fs::path root) : root_(fs::weakly_canonical(root)) {}

  [[nodiscard]] const fs::path& root() const { return root_; }
  [[nodiscard]] fs::path dir(const std::string& sub) const { return root_ / sub; }

  // The file the build would open, or nothing (a system or third-party header).
  [[nodiscard]] std::optional<fs::path> resolve(const include_line& inc) const {
    std::vector<fs::path> search;
    if (!inc.angle) search.push_back(inc.file.parent_path());
    if (inside(inc.file, dir("include"))) {
      search.push_back(dir("include"));
    } else {
      search.push_back(dir("examples"));
      search.push_back(dir("examples/nashprune"));
      search.push_back(dir("include"));
    }
    for (const auto& d : search) {
      const auto candidate = d / inc.name;
      if (fs::is_regular_file(candidate)) return fs::weakly_canonical(candidate);
    }
    return std::nullopt;
  }

  // Why `inc` breaks the structure, or nothing.
  [[nodiscard]] std::optional<std::string> violation(const include_line& inc) const {
    const auto target = resolve(inc);
    if (inc.name.find("tests/") != std::string::npos || (target && inside(*target, dir("tests"))) ||
        (!target && fs::is_regular_file(dir("tests") / inc.name))) {
      return "includes a file of tests/";
    }
    if (inside(inc.file, dir("include"))) return library_violation(inc, target);
    if (!target) {
      if (!inc.angle) return "a quoted include that resolves to no file of the tree";
      return std::nullopt;  // system or third-party header
    }
    for (const auto& [glue, allowed] : glue_dependencies()) {
      if (!inside(inc.file, dir(glue))) continue;
      if (inside(*target, dir("include"))) return std::nullopt;
      for (const auto& a : allowed) {
        if (inside(*target, dir(a))) return std::nullopt;
      }
      return glue + "/ may include only the library and " + join(allowed);
    }
    if (inside(*target, dir("include")) || inside(*target, dir("examples"))) return std::nullopt;
    return "examples/ may include only the library and examples/";
  }

 private:
  static std::string join(const std::vector<std::string>& dirs) {
    std::string out;
    for (std::size_t k = 0; k < dirs.size(); ++k) out += (k == 0 ? "" : k + 1 == dirs.size() ? " and " : ", ") + dirs[k] + "/";
    return out;
  }

  static const std::vector<std::pair<std::string, std::vector<std::string>>>& glue_dependencies() {
    static const std::vector<std::pair<std::string, std::vector<std::string>>> table{
        {"examples/gguf", {"examples/gguf"}},
        {"examples/calibrate", {"examples/gguf", "examples/calibrate"}},
        {"examples/report", {"examples/gguf", "examples/calibrate", "examples/report"}},
        {"examples/quantize", {"examples/gguf", "examples/calibrate", "examples/quantize"}},
        {"examples/fuzz", {"examples/gguf", "examples/calibrate", "examples/fuzz"}},
    };
    return table;
  }

  std::optional<std::string> library_violation(const include_line& inc, const std::optional<fs::path>& target) const {
    static const std::regex standard(R"(^(Eigen/[A-Za-z]+|[a-z_0-9]+|(immintrin|emmintrin|xmmintrin|x86intrin|cpuid)\.h)$)");
    if (!target) {
      if (inc.angle && std::regex_match(inc.name, standard)) return std::nullopt;
      return "include/ may include only the library, the standard library, Eigen and the SIMD intrinsics headers";
    }
    if (!inside(*target, dir("include"))) return "include/ may include only include/";
    const auto detail = dir("include/nashprune/detail");
    if (inside(inc.file, detail) && !inside(*target, detail) && !is_leaf(*target)) {
      return "detail/ may include only detail/ and the leaf public headers (those including no library header but config.hpp)";
    }
    return std::nullopt;
  }

  // A public header that includes no library header except config.hpp.
  bool is_leaf(const fs::path& header) const {
    if (const auto known = leaves_.find(header); known != leaves_.end()) return known->second;
    bool leaf = true;
    for (const auto& inc : includes_of(header)) {
      const auto target = resolve(inc);
      if (target && inside(*target, dir("include")) && target->filename() != "config.hpp") leaf = false;
    }
    leaves_[header] = leaf;
    return leaf;
  }

  fs::path root_;
  mutable std::map<fs::path, bool> leaves_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: check_includes ROOT (a tree holding include/ and examples/)\n";
    return 2;
  }
  const tree t(argv[1]);
  if (!fs::is_directory(t.dir("include")) || !fs::is_directory(t.dir("examples"))) {
    std::cerr << "check_includes: " << argv[1] << " holds no include/ and examples/\n";
    return 2;
  }
  std::size_t files = 0;
  std::size_t lines = 0;
  std::size_t offending = 0;
  for (const auto* sub : {"include", "examples"}) {
    std::vector<fs::path> sources;
    for (const auto& entry : fs::recursive_directory_iterator(t.dir(sub))) {
      if (entry.is_regular_file() && is_source(entry.path())) sources.push_back(fs::weakly_canonical(entry.path()));
    }
    std::sort(sources.begin(), sources.end());
    for (const auto& file : sources) {
      ++files;
      for (const auto& inc : includes_of(file)) {
        ++lines;
        if (const auto why = t.violation(inc)) {
          ++offending;
          std::cout << file.lexically_relative(t.root()).string() << ':' << inc.line << ": #include " << (inc.angle ? '<' : '"') << inc.name
                    << (inc.angle ? '>' : '"') << ": " << *why << '\n';
        }
      }
    }
  }
  // examples/ builds nothing from tests/.
  static const std::regex tests_source(R"((\.\./|_DIR\}/)tests/)");
  for (const auto& entry : fs::recursive_directory_iterator(t.dir("examples"))) {
    if (!entry.is_regular_file() || entry.path().filename() != "CMakeLists.txt") continue;
    std::ifstream in(entry.path());
    std::string text;
    for (int n = 1; std::getline(in, text); ++n) {
      if (!std::regex_search(text, tests_source)) continue;
      ++offending;
      std::cout << fs::weakly_canonical(entry.path()).lexically_relative(t.root()).string() << ':' << n << ": " << text
                << ": examples/ must build nothing from tests/\n";
    }
  }
  std::cout << offending << " offending of " << lines << " includes in " << files << " files\n";
  return offending == 0 ? 0 : 1;
}
