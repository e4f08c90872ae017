#!/usr/bin/env bash
# Provisions the pinned llama.cpp that nashprune's integration tests run against,
# plus an independent GGUF reader (npm @huggingface/gguf), in a cache outside any
# build tree:
#
#   ${NASHPRUNE_CACHE_DIR:-$HOME/.cache/nashprune}/llama.cpp-<version>/
#     src/        llama.cpp's exact source, cloned from the git bundle that the npm
#                 package node-llama-cpp@<version> ships (package/llama/gitRelease.bundle)
#     build/bin/  llama-perplexity, llama-imatrix, llama-quantize, llama-bench and the shared
#                 libraries libllama / libggml* (CPU only)
#     node/       node_modules/@huggingface/gguf
#     provisioned a stamp: written last, so its presence means "complete"
#
# Idempotent: a complete tree is reused at once. Prints the tree's path as the
# only line on stdout (progress goes to stderr), so callers can write
#   dir=$(cmake/provision-llama-cpp.sh)
# and pass it to CMake as -DNASHPRUNE_LLAMA_CPP_DIR="$dir".
#
# Environment: NASHPRUNE_CACHE_DIR (cache root), NASHPRUNE_JOBS (build jobs,
# default 2), NASHPRUNE_LLAMA_CPP_CMAKE_ARGS (extra CMake arguments, e.g.
# -DGGML_NATIVE=OFF for a cache shared between different CPUs).
set -euo pipefail

# Pinned versions: change them together with the llama.cpp behaviour the tests
# (tests/llama) check against this snapshot.
node_llama_cpp_version=3.22.1
huggingface_gguf_version=0.4.6
# Bumped whenever apply_patches or the built targets change, so an older cached
# tree is patched and rebuilt (incrementally) instead of being reused as it is.
patch_level=2

cache_root=${NASHPRUNE_CACHE_DIR:-$HOME/.cache/nashprune}
root="$cache_root/llama.cpp-$node_llama_cpp_version"
stamp="$root/provisioned"
jobs=${NASHPRUNE_JOBS:-2}
targets=(llama llama-perplexity llama-imatrix llama-quantize llama-bench)

say() { echo "provision-llama-cpp: $*" >&2; }
die() { say "error: $*"; exit 1; }

complete() { [ -f "$stamp" ] && grep -qx "patches=$patch_level" "$stamp"; }
if complete; then
  echo "$root"
  exit 0
fi

for tool in npm node git cmake ninja tar c++ python3; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "'$tool' is not installed (run .ci/setup, or install it: apt-get install nodejs npm git cmake ninja-build g++)"
done

mkdir -p "$root"
# Two concurrent runs (ctest -j, two CI steps) must not build into one tree.
exec 9>"$root/.lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
  if complete; then echo "$root"; exit 0; fi
fi

started=$(date +%s)
work=$(mktemp -d "$root/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. The source: node-llama-cpp's tarball carries llama.cpp as a git bundle.
if [ ! -d "$root/src/.git" ]; then
  say "fetching node-llama-cpp@$node_llama_cpp_version from the npm registry"
  if ! (cd "$work" && npm pack --silent "node-llama-cpp@$node_llama_cpp_version" >pack.log 2>&1); then
    cat "$work/pack.log" >&2 || true
    die "npm pack node-llama-cpp@$node_llama_cpp_version failed (network or registry unreachable?)"
  fi
  tarball=$(ls "$work"/node-llama-cpp-*.tgz 2>/dev/null | head -n1)
  [ -n "$tarball" ] || die "npm pack produced no tarball"
  tar -xzf "$tarball" -C "$work" package/llama/gitRelease.bundle ||
    die "$tarball holds no package/llama/gitRelease.bundle"
  rm -rf "$root/src.partial"
  git -c advice.detachedHead=false clone --quiet "$work/package/llama/gitRelease.bundle" "$root/src.partial" ||
    die "cloning the llama.cpp bundle failed"
  mv "$root/src.partial" "$root/src"
fi
say "llama.cpp source: $(git -C "$root/src" log -1 --format='%h %cd' --date=short)"

# Local fixes, each applied once (idempotent) and named in the stamp's patch level.
#  1. llama-perplexity prints "Final estimate: PPL = ..." through llama.cpp's
#     asynchronous logger, whose worker thread is never drained before main
#     returns (llama.cpp issue 22142, cited in common/log.cpp), so on busy cores
#     the last lines are lost even when written to a file. Draining it
#     (common_log_pause joins the worker after the queued lines) before the
#     final `return 0;` of main changes nothing else.
apply_patches() {
  local perplexity="$root/src/tools/perplexity/perplexity.cpp"
  grep -q "nashprune: drain the logger" "$perplexity" && return 0
  python3 - "$perplexity" <<'PY' || die "patching $perplexity failed"
import sys
path = sys.argv[1]
text = open(path).read()
anchor = "    llama_backend_free();\n\n    return 0;\n}"
if text.count(anchor) != 1:
    sys.exit("anchor not found once")
text = text.replace(anchor, "    llama_backend_free();\n\n"
                    "    common_log_pause(common_log_main()); // nashprune: drain the logger (llama.cpp issue 22142)\n"
                    "    return 0;\n}")
open(path, "w").write(text)
PY
}
apply_patches

# 2. A CPU-only build of only what the tests and `nashprune calibrate` use.
say "building ${targets[*]} with $jobs jobs (about 5 minutes on 2 cores)"
# shellcheck disable=SC2086 # the extra arguments are meant to split
cmake -S "$root/src" -B "$root/build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=ON \
  -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DGGML_METAL=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF \
  ${NASHPRUNE_LLAMA_CPP_CMAKE_ARGS:-} >"$root/configure.log" 2>&1 ||
  { tail -n 30 "$root/configure.log" >&2; die "configuring llama.cpp failed (log: $root/configure.log)"; }
cmake --build "$root/build" -j "$jobs" --target "${targets[@]}" >"$root/build.log" 2>&1 ||
  { tail -n 30 "$root/build.log" >&2; die "building llama.cpp failed (log: $root/build.log)"; }
for program in llama-perplexity llama-imatrix llama-quantize llama-bench; do
  [ -x "$root/build/bin/$program" ] || die "build finished but $root/build/bin/$program is missing"
done

# 3. An independent GGUF reader for cross-checking what nashprune writes.
say "installing @huggingface/gguf@$huggingface_gguf_version"
mkdir -p "$root/node"
if ! npm install --silent --no-audit --no-fund --prefix "$root/node" \
    "@huggingface/gguf@$huggingface_gguf_version" >"$work/npm.log" 2>&1; then
  cat "$work/npm.log" >&2 || true
  die "npm install @huggingface/gguf@$huggingface_gguf_version failed (network or registry unreachable?)"
fi

elapsed=$(( $(date +%s) - started ))
{
  echo "node-llama-cpp=$node_llama_cpp_version"
  echo "llama.cpp=$(git -C "$root/src" rev-parse HEAD)"
  echo "huggingface-gguf=$huggingface_gguf_version"
  echo "patches=$patch_level"
  echo "seconds=$elapsed"
} >"$stamp.partial"
mv "$stamp.partial" "$stamp"
say "done in ${elapsed}s: $root"
echo "$root"
