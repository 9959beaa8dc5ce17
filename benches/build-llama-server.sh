#!/usr/bin/env bash
# Build llama.cpp's `llama-server` and `llama-tokenize` (CPU only) as a
# reference implementation for Wick's benchmarks and tokenizer fixtures.
#
# The llama.cpp sources are the ones vendored in the source distribution of
# the Python package `llama-cpp-python` (vendor/llama.cpp), fetched with pip,
# so the only network access needed is the ordinary package-registry client.
#
# Usage:
#   benches/build-llama-server.sh            # build (idempotent)
#   WICK_BENCH_DIR=/some/dir benches/...     # choose the install dir
#   LLAMA_CPP_PYTHON_VERSION=0.3.36 ...      # override the pinned version
#   JOBS=4 ...                               # parallel compile jobs (default 2)
#   WICK_LLAMA_AMX=1 ...                     # keep Intel AMX kernels (default: off)
#   WICK_LLAMA_ISA=avx2 ...                  # build for AVX2+FMA only (GGML_NATIVE off, AVX-512
#                                            # off), the peer of Wick's forced avx2 variant; default
#                                            # `native`, the host's own instruction set
#
# AMX is compiled out by default: with -march=native on an AMX-capable Xeon
# (as on our dev VM), this llama.cpp segfaults in ggml_backend_amx_mul_mat
# (`ldtilecfg` on an invalid tile config) during the warm-up decode, i.e.
# llama-server dies right after loading the model.  Upstream: llama.cpp issue
# #20824 and PR #26954.  The plain AVX-512 CPU path is used instead.
#
# Result: $WICK_BENCH_DIR/bin/{llama-server,llama-tokenize}; the path of
# llama-server is printed on the last line of stdout.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
BENCH_DIR="${WICK_BENCH_DIR:-$HOME/.cache/wick/llama.cpp}"
JOBS="${JOBS:-2}"
PYTHON="${PYTHON:-python3}"
WICK_LLAMA_AMX="${WICK_LLAMA_AMX:-0}"
WICK_LLAMA_ISA="${WICK_LLAMA_ISA:-native}"
case "$WICK_LLAMA_ISA" in
    native) ISA_FLAGS=(-DGGML_NATIVE=ON) ;;
    avx2) ISA_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
                     -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX_VNNI=OFF) ;;
    *) echo "WICK_LLAMA_ISA must be native or avx2" >&2; exit 1 ;;
esac

NATIVE_EXTRA_FLAGS=""
if [[ "$WICK_LLAMA_AMX" == 0 && "$(uname -m)" == x86_64 ]]; then
    # Explicit -mno-* flags win over the -march=native that ggml adds.
    NATIVE_EXTRA_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi
CONFIG_ID="llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION amx=$WICK_LLAMA_AMX isa=$WICK_LLAMA_ISA"

SRC_ROOT="$BENCH_DIR/src"
SDIST_DIR="$BENCH_DIR/sdist"
PKG_DIR="$SRC_ROOT/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
LLAMA_SRC="$PKG_DIR/vendor/llama.cpp"
BUILD_DIR="$BENCH_DIR/build-$LLAMA_CPP_PYTHON_VERSION-$WICK_LLAMA_ISA"
BIN_DIR="$BENCH_DIR/bin-$WICK_LLAMA_ISA"
STAMP="$BIN_DIR/.built-from"

log() { echo "[build-llama-server] $*" >&2; }

have_bins() {
    [[ -x "$BIN_DIR/llama-server" && -x "$BIN_DIR/llama-tokenize" && -f "$STAMP" ]] &&
        [[ "$(cat "$STAMP")" == "$CONFIG_ID" ]]
}

if have_bins; then
    log "already built ($CONFIG_ID) in $BIN_DIR"
    echo "$BIN_DIR/llama-server"
    exit 0
fi

mkdir -p "$BENCH_DIR" "$SRC_ROOT" "$SDIST_DIR" "$BIN_DIR"

# --- 1. fetch the sdist ------------------------------------------------------
SDIST="$SDIST_DIR/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
if [[ ! -f "$SDIST" ]]; then
    log "downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist"
    # `--no-binary llama-cpp-python` (rather than `:all:`) forces the sdist for
    # the package itself while still letting pip use wheels for the build
    # backend it installs to read the metadata; with `:all:` pip would compile
    # cmake and ninja from source just to download a tarball.
    "$PYTHON" -m pip download --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$SDIST_DIR" >&2
fi
[[ -f "$SDIST" ]] || { log "sdist not found at $SDIST"; exit 1; }

# --- 2. extract --------------------------------------------------------------
if [[ ! -f "$LLAMA_SRC/CMakeLists.txt" ]]; then
    log "extracting $SDIST"
    rm -rf "$PKG_DIR"
    tar -xzf "$SDIST" -C "$SRC_ROOT"
fi
[[ -f "$LLAMA_SRC/CMakeLists.txt" ]] || { log "no llama.cpp sources in $LLAMA_SRC"; exit 1; }
# The sdist keeps a stray `.git` file pointing at a submodule dir that does
# not exist; remove it so llama.cpp's build-info step does not trip on it.
[[ -f "$LLAMA_SRC/.git" ]] && rm -f "$LLAMA_SRC/.git"

# --- 3. cmake ----------------------------------------------------------------
if ! command -v cmake >/dev/null 2>&1; then
    log "cmake not found; installing with apt-get"
    SUDO=""
    [[ "$(id -u)" != 0 ]] && SUDO="sudo"
    $SUDO apt-get update >&2
    $SUDO apt-get install -y cmake >&2
fi

# --- 4. configure + build ----------------------------------------------------
# No network at build time: no CURL, no OpenSSL, no prebuilt web UI download
# (the server then embeds an empty UI table, the HTTP API is unaffected).
# Configuring is cheap and cmake only rebuilds what changed, so it is re-run
# whenever the binaries are missing or were built with another config.
log "configuring in $BUILD_DIR ($CONFIG_ID)"
cmake -S "$LLAMA_SRC" -B "$BUILD_DIR" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="$NATIVE_EXTRA_FLAGS" \
    -DCMAKE_CXX_FLAGS="$NATIVE_EXTRA_FLAGS" \
    "${ISA_FLAGS[@]}" \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON \
    -DBUILD_SHARED_LIBS=OFF >&2

log "building llama-server llama-tokenize with -j$JOBS (slow on few cores)"
start=$(date +%s)
cmake --build "$BUILD_DIR" --config Release -j "$JOBS" \
    --target llama-server llama-tokenize >&2
log "build step took $(( $(date +%s) - start ))s"

# --- 5. install ----------------------------------------------------------------
for b in llama-server llama-tokenize; do
    src="$BUILD_DIR/bin/$b"
    [[ -x "$src" ]] || { log "missing $src after build"; exit 1; }
    install -m 0755 "$src" "$BIN_DIR/$b"
done
echo "$CONFIG_ID" > "$STAMP"

log "installed into $BIN_DIR"
echo "$BIN_DIR/llama-server"
