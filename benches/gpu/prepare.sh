#!/usr/bin/env bash
# Run HERE (the build machine, no GPU) before calling the device: builds Wick with CUDA and packs what
# benches/gpu/run.sh needs into .device/ (git-ignored), within the 64 MiB that may travel.
#
#   bash benches/gpu/prepare.sh                 # .device/wick.xz (+ on-device.sh)
#   WITH_TESTS=1 bash benches/gpu/prepare.sh    # also .device/wick-tests.xz: the lib's unit tests with
#                                               # the CUDA kernel tests (src/cuda/tests.rs)
#
# The stripped CUDA binary is ~75 MB (candle's and our PTX), over the carry limit, so it travels
# xz-compressed (~12 MB; the test binary ~10 MB) and run.sh unpacks it with python's lzma there.
# Environment: WICK_CUDA_TARGET (cargo target dir, default ~/.cache/wick/cuda-target as in .ci/run,
# kept apart from the CPU
# build's target/), WICK_SHARED (the shared/ folder, default ../shared beside the checkout).
# A first CUDA build takes ~20 min on 2 cores (candle-kernels' nvcc work); later ones are incremental.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
shared=${WICK_SHARED:-$PWD/../shared}
limit=$((64 << 20))

eval "$(bash "$shared/cuda/toolchain.sh")"
export CARGO_TARGET_DIR=${WICK_CUDA_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/wick/cuda-target}
echo "building wick with --features cuda in $CARGO_TARGET_DIR" >&2
cargo build --release --features cuda --bin wick

mkdir -p .device
# .device/ must never be committed: .gitignore lists /.device/; make sure, else exclude it locally.
if ! git check-ignore -q .device/wick; then
  echo "/.device/" >>.git/info/exclude
  echo "added /.device/ to .git/info/exclude" >&2
fi
rm -f .device/wick .device/wick.xz .device/wick-tests .device/wick-tests.xz
strip -o .device/wick.tmp "$CARGO_TARGET_DIR/release/wick"
xz -T0 -6 -c .device/wick.tmp >.device/wick.xz
rm .device/wick.tmp
cp "$shared/cuda/on-device.sh" .device/on-device.sh

if [[ ${WITH_TESTS:-0} == 1 ]]; then
  echo "building the lib's test binary with --features cuda" >&2
  # The executable of the lib's unit tests, as cargo reports it.
  tests=$(cargo test --release --features cuda --lib --no-run --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"].get("test") \
            and "lib" in m["target"]["kind"]:
        print(m["executable"])')
  [[ -n $tests ]] || { echo "no lib test executable found" >&2; exit 1; }
  strip -o .device/wick-tests.tmp "$tests"
  xz -T0 -6 -c .device/wick-tests.tmp >.device/wick-tests.xz
  rm .device/wick-tests.tmp
fi

ls -la .device >&2
total=$(du -cb .device/* | tail -1 | cut -f1)
echo "total $((total >> 20)) MiB of $((limit >> 20)) MiB that may travel (carry: [\".device\"])" >&2
if ((total > limit)); then
  echo "too big to carry: drop WITH_TESTS or leave something out" >&2
  exit 1
fi
echo "now on the GPU machine (device tool 'run', carry [\".device\"]): bash benches/gpu/run.sh" >&2
