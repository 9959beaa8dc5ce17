#!/usr/bin/env bash
# Constrained decoding against plain decoding on one Wick server, in one run: the same prompts, the
# same 128 greedy tokens each (end-of-generation banned), once plain and once with a json_schema
# response_format whose JSON cannot be complete within them (so both run to max_tokens). Then the
# grammar counters from /metrics: masks computed, time computing them (on the mask threads, beside
# the batch steps) and time sampling waited for them.
#   bash benches/grammar.sh [concurrency list, default 1,16] [max tokens, default 128]
set -euo pipefail
cd "$(dirname "$0")/.."
levels=${1:-1,16}
max_tokens=${2:-128}
port=${WICK_BENCH_PORT:-8382}
model=smollm2-135m-instruct

cargo build --release --bin wick --bench load
load=$(ls -t target/release/deps/load-* | grep -v '\.d$' | head -n 1)
./target/release/wick pull "$model" >/dev/null

./target/release/wick serve --model "$model" --port "$port" --max-batch-size 16 >/tmp/wick-grammar-bench.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.5; done

# People, each with a name, an age and tags; at least 20 of them, so about 300 tokens of JSON.
schema='{"type": "array", "minItems": 20, "items": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "age", "tags"], "additionalProperties": false}}'
format="{\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"people\", \"strict\": true, \"schema\": $schema}}}"

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); wick $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(./target/release/wick --version | tail -n 1)"
url="http://127.0.0.1:$port"
"$load" --target "json=$url,$model,$pid" --extra "json=$format" --target "plain=$url,$model" \
        --concurrency "$levels" --max-tokens "$max_tokens" --ban 0,2 --endpoint chat

metric() { curl -s "$url/metrics" | awk -v m="wick_deployment_$1{" 'index($0, m) == 1 { print $2 }'; }
masks=$(metric grammar_masks)
compute=$(metric grammar_mask_seconds)
wait=$(metric grammar_wait_seconds)
awk -v n="$masks" -v c="$compute" -v w="$wait" 'BEGIN {
  printf "\ngrammar masks: %d, computing %.3f s in all (%.3f ms each), sampling waited %.3f s in all (%.3f ms per mask)\n", n, c, 1000 * c / n, w, 1000 * w / n
  printf "per step of 16 constrained streams: %.2f ms of mask computation, %.2f ms waited\n", 16000 * c / n, 16000 * w / n
}'
