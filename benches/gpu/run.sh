#!/usr/bin/env bash
# The GPU checks of Wick's CUDA path, as ONE command, on the lent GPU machine (see README.md here):
#
#   bash benches/gpu/run.sh     # from the repo root, with the CUDA build at .device/wick.xz (prepare.sh)
#
# Phases (each time-bounded; a failing phase is recorded and the run goes on):
#   env        device name, driver, torch version -> env.json
#   tests      .device/wick-tests(.xz), if present (CUDA kernel tests)       -> wick-tests.log
#   model      a random 1B llama in bf16 (make_llama.py), generated here in $WORK
#   probe      wick probe --device cuda:0                                      -> probe_*.json
#   reference  plain-PyTorch forward on the GPU (reference.py), bf16 and f32   -> reference_*.json
#   compare    compare.py: logits rel. error, top-1, 32 greedy steps          -> compare_*.json/.log
#              for a 16-token and a 600-token prompt on the 1B bf16 model (against the f32 answer:
#              at most max(2e-2, 2x PyTorch's own bf16 error)), then the same on a
#              ~20M-parameter f32 model (1e-4, the sharp check)
#   bandwidth  bandwidth.py (device copy GB/s); decode floor = weights / bandwidth
#   serve+load wick serve --max-batch-size 256, load.py at 1, 8, 64, 256      -> load.json, serve.log
#   idle       a second serve with --idle-timeout 5s: one request, wait for the unload, GPU memory
#              before/loaded/after from nvidia-smi                             -> idle_memory.json
# Everything lands in $OUT (or ./gpu-results when $OUT is unset): JSON per phase, logs, phases.tsv,
# and results.md, a Markdown block ready for BENCHMARKS.md (rewritten after every phase, so a run cut
# by the 10-minute limit still reports what it measured). Exit status: 0 only if the correctness
# checks (compare) passed and no phase failed.
#
# Knobs (environment): WICK (binary; default .device/wick, else .device/wick.xz unpacked), WICK_DEVICE
# (default cuda:0; `cpu` runs the same flow without the GPU-only phases, to try this script without a
# GPU), PRESET (1b), DTYPE (bf16),
# WORK (scratch dir for the model, default a fresh dir under ${TMPDIR:-/tmp}), LOAD_DURATION (15 s per
# concurrency level), CONCURRENCY (1,8,64,256), MAX_TOKENS (256), WICK_TESTS_ARGS (extra arguments for
# .device/wick-tests), PYTHON (python3).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
root=$PWD
G=benches/gpu
OUT=${OUT:-$root/gpu-results}
mkdir -p "$OUT"
WICK_DEVICE=${WICK_DEVICE:-cuda:0}
PRESET=${PRESET:-1b}
DTYPE=${DTYPE:-bf16}
PY=${PYTHON:-python3}
LOAD_DURATION=${LOAD_DURATION:-15}
CONCURRENCY=${CONCURRENCY:-1,8,64,256}
MAX_TOKENS=${MAX_TOKENS:-256}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/wick-gpu.XXXXXX")}
MODEL=$WORK/llama-$PRESET-$DTYPE
t_start=$(date +%s)
gpu=0
[[ $WICK_DEVICE == cuda* ]] && gpu=1
ref_device=cpu
((gpu)) && ref_device=cuda
: >"$OUT/phases.tsv"
failed=0

log() { echo "[run.sh $(($(date +%s) - t_start))s] $*" >&2; }

# phase NAME TIMEOUT_S CMD...: runs CMD under `timeout`, output to $OUT/NAME.log (and the terminal),
# records "NAME rc seconds" in phases.tsv and rewrites results.md.
phase() {
  local name=$1 limit=$2 t0 rc
  shift 2
  log "phase $name (at most ${limit}s): $*"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > >(tee "$OUT/$name.log") 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$OUT/phases.tsv"
  ((rc == 0)) || { log "phase $name FAILED (rc=$rc; 124 = timed out)"; failed=1; }
  "$PY" "$G/summarize.py" "$OUT" || true
  return "$rc"
}

# The CUDA 13 libraries that PyTorch's wheels installed (libcublas.so.13, libcudart.so.13, ...), as
# shared/cuda/on-device.sh does; only the checkout travels, so its logic is repeated here.
# libcuda.so.1 itself comes from the driver.
if ((gpu)); then
  cudalib=$("$PY" - <<'PY'
import glob, os
try:
    import nvidia.cu13
    dirs = [os.path.join(p, "lib") for p in nvidia.cu13.__path__]
except ImportError:  # older layout: one package per library (nvidia/cublas/lib, ...)
    import nvidia
    dirs = sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib")))
print(":".join(d for d in dirs if os.path.isdir(d)))
PY
  ) || cudalib=""
  [[ -n $cudalib ]] || log "warning: no nvidia CUDA libraries found through python; relying on the system's"
  export LD_LIBRARY_PATH="$cudalib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_http URL SECONDS: waits until URL answers 200.
wait_http() {
  "$PY" - "$1" "$2" <<'PY'
import sys, time, urllib.request
url, limit = sys.argv[1], float(sys.argv[2])
end = time.time() + limit
while time.time() < end:
    try:
        if urllib.request.urlopen(url, timeout=2).status == 200:
            sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.exit(1)
PY
}

stop_server() {
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

# The binaries: prepare.sh leaves them xz-compressed (.device/wick.xz, .device/wick-tests.xz), since
# the stripped CUDA build alone is ~75 MB and only 64 MiB may travel; unpack them with python's lzma
# (no xz tool needed). Uncompressed .device/wick and .device/wick-tests are used as they are.
unpack() {  # unpack NAME: prints the path of the runnable binary, or nothing
  if [[ -x .device/$1 ]]; then
    echo ".device/$1"
  elif [[ -f .device/$1.xz ]]; then
    mkdir -p "$WORK/bin"
    "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      ".device/$1.xz" "$WORK/bin/$1" && chmod +x "$WORK/bin/$1" && echo "$WORK/bin/$1"
  fi
}
WICK=${WICK:-$(unpack wick)}
WICK=${WICK:-.device/wick}
WICK_TESTS=${WICK_TESTS:-$(unpack wick-tests)}

# ---- env ----
"$PY" - "$OUT/env.json" "$WICK" "$PRESET" "$DTYPE" "$WICK_DEVICE" <<'PY'
import json, subprocess, sys, datetime
out, wick, preset, dtype, device = sys.argv[1:]
def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:
        return f"unavailable ({type(e).__name__})"
env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
       "preset": preset, "dtype": dtype, "device": device, "wick_version": run([wick, "--version"])}
smi = run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader", "-i", "0"])
parts = [p.strip() for p in smi.split(",")]
if len(parts) == 3:
    env.update(gpu=parts[0], gpu_memory=parts[1], driver=parts[2])
else:
    env.update(gpu=f"no GPU ({smi})" if device.startswith("cuda") else "cpu", driver="-")
try:
    import torch
    env["torch"] = torch.__version__
    env["torch_cuda"] = torch.version.cuda
except Exception as e:
    env["torch"] = f"unavailable ({e})"
json.dump(env, open(out, "w"), indent=2)
print(json.dumps(env))
PY
log "output in $OUT, scratch in $WORK"
[[ -x $WICK ]] || { log "no executable $WICK: build it with benches/gpu/prepare.sh and carry .device"; failed=1; }

# ---- tests: the CUDA test binary, when one was carried ----
if [[ -n $WICK_TESTS && -x $WICK_TESTS ]]; then
  # shellcheck disable=SC2086  # WICK_TESTS_ARGS is a list of arguments
  phase wick-tests 150 "$WICK_TESTS" ${WICK_TESTS_ARGS:-}
  grep -E '^test result:' "$OUT/wick-tests.log" | tail -1 >"$OUT/wick-tests.summary"
fi

# ---- model ----
phase model 240 "$PY" "$G/make_llama.py" "$MODEL" --preset "$PRESET" --dtype "$DTYPE" --seed 1
if [[ ! -f $MODEL/model.safetensors ]]; then
  log "no model, nothing more to check"
  exit 1
fi
# Prompts, fixed pseudo-random ids below the model's vocabulary: "short" is 16 tokens (specials 1
# and 2 among them; a few KV blocks once 32 greedy + 64 timed steps follow), "long" 600 (prefill over
# many blocks).
prompt() {  # prompt MODEL_DIR short|long
  "$PY" - "$1/config.json" "$2" <<'PY'
import json, random, sys
v = json.load(open(sys.argv[1]))["vocab_size"]
if sys.argv[2] == "short":
    ids = [1, 4023, 17, 9311, 250, v - 1, 7, 1200, 5, 2, 642, 3, 11111, 20000, 99, 2]
else:
    r = random.Random(7)
    ids = [r.randrange(4, v) for _ in range(600)]
print(",".join(str(i % v) for i in ids))
PY
}
VOCAB=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$MODEL/config.json")

# ---- reference and probe, then compare ----
# check TAG MODEL_DIR TOKENS DECODE_STEPS: wick probe, then reference.py in the checkpoint's dtype and
# (for a bf16/f16 checkpoint) in f32, both also scoring wick's greedy tokens (--follow), then
# compare.py, which fails the run on a mismatch.
check() {
  local tag=$1 model=$2 tokens=$3 decode=$4 f32ref=()
  phase "probe_$tag" 240 "$WICK" probe --model "$model" --device "$WICK_DEVICE" --tokens "$tokens" \
    --steps 32 --decode-steps "$decode" --json "$OUT/probe_$tag.json"
  phase "reference_$tag" 180 "$PY" "$G/reference.py" "$model" --tokens "$tokens" --steps 32 \
    --device "$ref_device" --follow "$OUT/probe_$tag.json" --json "$OUT/reference_$tag.json"
  if ! grep -q '"torch_dtype": "float32"' "$model/config.json"; then
    phase "reference_${tag}_f32" 180 "$PY" "$G/reference.py" "$model" --tokens "$tokens" --steps 32 \
      --device "$ref_device" --compute f32 --follow "$OUT/probe_$tag.json" --json "$OUT/reference_${tag}_f32.json"
    f32ref=(--f32-ref "$OUT/reference_${tag}_f32.json")
  fi
  phase "compare_$tag" 60 "$PY" "$G/compare.py" "$OUT/reference_$tag.json" "$OUT/probe_$tag.json" \
    "${f32ref[@]}" --json "$OUT/compare_$tag.json"
}
check short "$MODEL" "$(prompt "$MODEL" short)" 64
check long "$MODEL" "$(prompt "$MODEL" long)" 8
# The sharp check: an f32 checkpoint, where wick must match to 1e-4 (bf16 rounding hides small bugs,
# such as a slightly wrong rotary frequency, under its 2e-2).
if ((gpu)); then
  phase model_f32 120 "$PY" "$G/make_llama.py" "$WORK/llama-small-f32" --preset small --dtype f32 --seed 2
  check f32 "$WORK/llama-small-f32" "$(prompt "$WORK/llama-small-f32" long)" 8
fi

# ---- bandwidth and the batch-1 decode floor ----
if ((gpu)); then
  phase bandwidth 120 "$PY" "$G/bandwidth.py" --gib 2 --json "$OUT/bandwidth.json"
  "$PY" - "$OUT/probe_short.json" "$OUT/bandwidth.json" <<'PY' || true
import json, sys
p, b = (json.load(open(f)) for f in sys.argv[1:3])
floor = p["weights_bytes"] / (b["gbps_median"] * 1e9) * 1e3
print(f"decode floor {floor:.3f} ms = {p['weights_bytes'] / 1e9:.3f} GB / {b['gbps_median']} GB/s; "
      f"wick batch-1 decode {p['decode_ms_batch1']:.3f} ms = {p['decode_ms_batch1'] / floor:.2f}x the floor")
PY
fi

# ---- serve + load ----
port=$(free_port)
data=$WORK/data-serve
log "starting wick serve on port $port"
"$WICK" serve --model "bench=$MODEL" --device "$WICK_DEVICE" --port "$port" --idle-timeout never \
  --max-batch-size 256 --max-queue 4096 --max-kv-tokens 1048576 --data-dir "$data" --no-pull \
  >"$OUT/serve.log" 2>&1 &
serve_pid=$!
if wait_http "http://127.0.0.1:$port/health" 90; then
  levels=$(($(tr -cd , <<<"$CONCURRENCY" | wc -c) + 1))
  phase load $((levels * (LOAD_DURATION + 30 + 10) + 60)) "$PY" "$G/load.py" --url "http://127.0.0.1:$port" \
    --model bench --concurrency "$CONCURRENCY" --max-tokens "$MAX_TOKENS" --duration "$LOAD_DURATION" --grace 30 \
    --prompt-words 64 --prompt-vocab "$VOCAB" --ban 0,1,2 --json "$OUT/load.json"
  # Concurrency 1 once more with a new connection per request: without TCP_NODELAY on the server,
  # kept-alive connections add a ~40 ms delayed-ACK stall to TTFT; this tells the two apart.
  phase load_fresh 90 "$PY" "$G/load.py" --url "http://127.0.0.1:$port" --model bench --concurrency 1 \
    --max-tokens "$MAX_TOKENS" --duration 10 --grace 30 --prompt-words 64 --prompt-vocab "$VOCAB" --ban 0,1,2 \
    --fresh-connections --json "$OUT/load_fresh.json"
else
  log "wick serve did not answer /health in 90 s (see serve.log)"
  printf 'load\t1\t0\n' >>"$OUT/phases.tsv"
  failed=1
fi
stop_server "$serve_pid"

# ---- idle unload gives the GPU memory back ----
phase idle 240 "$PY" "$G/idle_check.py" --wick "$WICK" --model "$MODEL" --device "$WICK_DEVICE" \
  --idle-timeout 5s --log "$OUT/serve_idle.log" --json "$OUT/idle_memory.json"

"$PY" "$G/summarize.py" "$OUT" || true
log "done in $(($(date +%s) - t_start)) s; results in $OUT/results.md"
cat "$OUT/results.md" 2>/dev/null
# Failing phases include compare_* (wick does not match the reference).
exit "$failed"
