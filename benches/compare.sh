#!/usr/bin/env bash
# Wick against llama.cpp's llama-server on the same GGUF, same machine, same run.
#   bash benches/compare.sh [concurrency list, default 1,4,16] [max tokens, default 128]
#                           [long prompt tokens, default 1400; 0 skips that row]
#   WICK_CPU_VARIANT=avx2 bash benches/compare.sh    # both sides on AVX2: Wick's forced variant
#                                                     # against llama-server built for AVX2 alone
#   WICK_BENCH_MODEL=gemma-3-270m bash benches/compare.sh 1,16 128 0
#                                                     # the base model, over /v1/completions
# Builds Wick (release) and llama-server (benches/build-llama-server.sh) when missing, pulls the
# default model, starts both servers on loopback, runs benches/load.rs against both, stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
levels=${1:-1,4,16}
max_tokens=${2:-128}
long_prompt=${3:-1400}
wick_port=${WICK_BENCH_PORT:-8380}
llama_port=${LLAMA_BENCH_PORT:-8381}

# The peer is built for the instruction set Wick runs: AVX2 alone for a forced avx2, else the host's.
# It is built first because its script installs cmake, which the bench's dev-dependencies need (the
# reference libopus); the server's own build does not.
isa=native
[[ ${WICK_CPU_VARIANT:-} == avx2 ]] && isa=avx2
llama_server=$(WICK_LLAMA_ISA=$isa bash benches/build-llama-server.sh | tail -n 1)
cargo build --release --bin wick --bench load
load=$(ls -t target/release/deps/load-* | grep -v '\.d$' | head -n 1)
# The model, its endpoint, and its end-of-generation ids, banned so that every request generates
# exactly max_tokens on both servers.
model_name=${WICK_BENCH_MODEL:-smollm2-135m-instruct}
case "$model_name" in
  # <|endoftext|>=0, <|im_end|>=2
  smollm2-135m-instruct) endpoint=chat; ban=0,2 ;;
  # <eos>=1, <end_of_turn>=106, </s>=212 (llama.cpp ends on all three)
  gemma-3-270m) endpoint=completions; ban=1,106,212 ;;
  *) echo "WICK_BENCH_MODEL: no end-of-generation ids known for $model_name" >&2; exit 1 ;;
esac
model=$(./target/release/wick pull "$model_name")

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

./target/release/wick serve --model "$model_name" --port "$wick_port" --max-batch-size 16 >/tmp/wick-bench.log 2>&1 &
wick_pid=$!; pids+=("$wick_pid")
"$llama_server" -m "$model" -t 2 -np 16 -c 16384 --host 127.0.0.1 --port "$llama_port" >/tmp/llama-bench.log 2>&1 &
llama_pid=$!; pids+=("$llama_pid")

wait_healthy() {
  for url in "$@"; do
    for _ in $(seq 1 120); do curl -sf "$url" >/dev/null && break; sleep 0.5; done
  done
}
wait_healthy "http://127.0.0.1:$wick_port/health" "http://127.0.0.1:$llama_port/health"

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB; flags: $(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512_vnni|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "wick $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(./target/release/wick --version | tail -n 1); llama-server ($isa build): $("$llama_server" --version 2>&1 | head -n 1)"
"$load" --target "wick=http://127.0.0.1:$wick_port,$model_name,$wick_pid" \
        --target "llama=http://127.0.0.1:$llama_port,$model_name,$llama_pid" \
        --concurrency "$levels" --max-tokens "$max_tokens" --ban "$ban" --endpoint "$endpoint"

# The long prompt, one request at a time. llama-server is restarted with one slot of 4096 positions:
# with 16 slots each holds 16384/16 = 1024 positions and the prompt would not fit (and one slot is
# its best case for a single stream). Wick keeps its one configuration.
if (( long_prompt > 0 )); then
  kill "$llama_pid"; wait "$llama_pid" 2>/dev/null || true
  "$llama_server" -m "$model" -t 2 -np 1 -c 4096 --host 127.0.0.1 --port "$llama_port" >/tmp/llama-bench-long.log 2>&1 &
  llama_pid=$!; pids+=("$llama_pid")
  wait_healthy "http://127.0.0.1:$llama_port/health"
  "$load" --target "wick=http://127.0.0.1:$wick_port,$model_name,$wick_pid" \
          --target "llama=http://127.0.0.1:$llama_port,$model_name,$llama_pid" \
          --concurrency none --long-prompt "$long_prompt" --ban "$ban" --endpoint "$endpoint"
fi
