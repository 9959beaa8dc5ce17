#!/usr/bin/env python3
"""Load test of an OpenAI-compatible server: streaming chat completions at several concurrencies.

    python3 benches/gpu/load.py --url http://127.0.0.1:PORT --model NAME --concurrency 1,8,64,256 \
        --max-tokens 256 [--duration 20] [--prompt-words 64] [--ban 0,1,2] [--json OUT.json]

Standard library only (threads + http.client). For each concurrency level C, C client threads each send
requests back to back (`"stream": true, "stream_options": {"include_usage": true}`, temperature 0,
`max_tokens`) until --duration seconds have passed since the level started; requests in flight then
run to their end (at most --grace more seconds; what is still open after that is cut and counted as
incomplete). The server has no `ignore_eos`: pass --ban with the ids of the end tokens to push them
out through `logit_bias` (-100), so that every request runs to max_tokens (run.sh bans 0,1,2, the
special tokens of make_llama.py's tokenizer).

Reported per level:
  tokens_per_s        output tokens that arrived inside the measuring window (the level's start up to
                      --duration, or to the last token if everything ended sooner) / window length; a
                      content chunk counts as completion_tokens / chunks of its request (usually 1)
  tokens_per_s_total  sum of usage.completion_tokens / wall time of the level, tail included
  ttft_ms_median      median time from sending a request to its first content chunk
  itl_ms_median       median over requests of (last chunk - first chunk) / (completion_tokens - 1)
  requests, incomplete, errors (first few error texts kept)
Clients keep their connection alive between requests, as SDK clients do (--fresh-connections opens
one per request). A server that does not set TCP_NODELAY shows it here: on a kept-alive connection
its small stream writes wait for the client's delayed ACK (~40 ms on Linux), visible as a TTFT of
40+ ms and tokens arriving in bursts.
Prompts are --prompt-words random words "tN" (one token each with make_llama.py's tokenizer), so
requests do not share a prefix beyond the chat template.
"""

import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
import urllib.parse


class Client:
    """One request at a time on one keep-alive connection."""

    def __init__(self, url, timeout, fresh=False):
        self.fresh = fresh  # a new connection for every request instead of keep-alive
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.base = u.hostname, u.port or 80, u.path.rstrip("/")
        self.timeout = timeout
        self.conn = None

    def connect(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def abort(self):
        conn = self.conn
        try:
            if conn is not None and conn.sock is not None:
                conn.sock.shutdown(2)
        except OSError:
            pass

    def chat_stream(self, body):
        """Sends one streaming request. Returns a dict of timings, tokens and errors."""
        rec = {"sent": time.monotonic(), "chunks": [], "completion_tokens": None, "error": None, "finish": None}
        conn = self.conn or self.connect()
        try:
            conn.request("POST", self.base + "/v1/chat/completions", body=json.dumps(body),
                         headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
            resp = conn.getresponse()
            if resp.status != 200:
                rec["error"] = f"HTTP {resp.status}: {resp.read()[:300].decode(errors='replace')}"
                return rec
            while True:
                line = resp.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                now = time.monotonic()
                msg = json.loads(data)
                if "error" in msg:
                    rec["error"] = json.dumps(msg["error"])[:300]
                    continue
                for ch in msg.get("choices") or []:
                    if (ch.get("delta") or {}).get("content"):
                        rec["chunks"].append(now)
                    if ch.get("finish_reason"):
                        rec["finish"] = ch["finish_reason"]
                if msg.get("usage"):
                    rec["completion_tokens"] = msg["usage"].get("completion_tokens")
            resp.read()  # drain, so the connection can be reused
            if self.fresh:
                conn.close()
                self.conn = None
        except Exception as e:  # noqa: BLE001 - a load test records every failure and goes on
            rec["error"] = f"{type(e).__name__}: {e}"
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
            self.conn = None
        return rec


def make_body(args, rng):
    words = " ".join(f"t{rng.randrange(4, args.prompt_vocab)}" for _ in range(args.prompt_words))
    body = {
        "model": args.model,
        "messages": [{"role": "user", "content": words}],
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if args.ban:
        body["logit_bias"] = {str(t): -100 for t in args.ban}
    return body


def run_level(args, conc, seed):
    clients = [Client(args.url, args.timeout, args.fresh_connections) for _ in range(conc)]
    records, lock = [], threading.Lock()
    t0 = time.monotonic()
    stop_at = t0 + args.duration

    def worker(i):
        rng = random.Random(seed * 100003 + i)
        while time.monotonic() < stop_at:
            rec = clients[i].chat_stream(make_body(args, rng))
            with lock:
                records.append(rec)
            if rec["error"] and time.monotonic() < stop_at:
                time.sleep(0.2)  # do not spin on a refusing server

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(conc)]
    for t in threads:
        t.start()
    deadline = stop_at + args.grace
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    incomplete = sum(t.is_alive() for t in threads)
    if incomplete:  # cut what is still open, so that it does not load the next level
        for c in clients:
            c.abort()
        for t in threads:
            t.join(5)
    t_end = time.monotonic()

    with lock:
        recs = list(records)
    ok = [r for r in recs if not r["error"] and r["chunks"]]
    errors = [r["error"] for r in recs if r["error"]]
    last_chunk = max((r["chunks"][-1] for r in ok), default=t0)
    window_end = min(stop_at, last_chunk)
    window = max(window_end - t0, 1e-9)
    in_window, total_tokens = 0.0, 0
    ttft, itl = [], []
    for r in ok:
        n_tok = r["completion_tokens"] if r["completion_tokens"] is not None else len(r["chunks"])
        total_tokens += n_tok
        per_chunk = n_tok / len(r["chunks"])
        in_window += per_chunk * sum(1 for c in r["chunks"] if c <= window_end)
        ttft.append((r["chunks"][0] - r["sent"]) * 1e3)
        if n_tok > 1:
            itl.append((r["chunks"][-1] - r["chunks"][0]) / (n_tok - 1) * 1e3)
    med = lambda xs: round(statistics.median(xs), 2) if xs else None  # noqa: E731
    return {
        "concurrency": conc,
        "requests": len(ok),
        "incomplete": incomplete,
        "errors": len(errors),
        "error_samples": errors[:3],
        "completion_tokens": total_tokens,
        "mean_completion_tokens": round(total_tokens / len(ok), 1) if ok else None,
        "window_s": round(window, 2),
        "wall_s": round(t_end - t0, 2),
        "tokens_per_s": round(in_window / window, 1),
        "tokens_per_s_total": round(total_tokens / max(t_end - t0, 1e-9), 1),
        "ttft_ms_median": med(ttft),
        "ttft_ms_p90": round(sorted(ttft)[int(0.9 * (len(ttft) - 1))], 2) if ttft else None,
        "itl_ms_median": med(itl),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--concurrency", default="1,8,64,256")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per level in which requests start")
    ap.add_argument("--grace", type=float, default=60.0, help="most seconds to wait for requests in flight")
    ap.add_argument("--timeout", type=float, default=120.0, help="socket timeout per read")
    ap.add_argument("--prompt-words", type=int, default=64)
    ap.add_argument("--prompt-vocab", type=int, default=1000, help="prompt words are t4 .. t{this-1}")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--ban", type=lambda s: [int(x) for x in s.split(",") if x], default=[],
                    help="token ids to ban with logit_bias -100 (the end tokens)")
    ap.add_argument("--fresh-connections", action="store_true",
                    help="a new TCP connection per request (default: keep-alive, as SDK clients do)")
    ap.add_argument("--json")
    args = ap.parse_args()

    # Warm-up: the first request may load the model.
    t = time.monotonic()
    warm = Client(args.url, max(args.timeout, 600)).chat_stream(
        {**make_body(args, random.Random(0)), "max_tokens": 8})
    warm_s = round(time.monotonic() - t, 2)
    print(json.dumps({"warmup_s": warm_s, "error": warm["error"]}), flush=True)
    results = {"url": args.url, "model": args.model, "max_tokens": args.max_tokens,
               "prompt_words": args.prompt_words, "duration_s": args.duration, "warmup_s": warm_s,
               "warmup_error": warm["error"], "levels": []}
    for i, conc in enumerate(int(c) for c in args.concurrency.split(",") if c):
        r = run_level(args, conc, seed=i + 1)
        print(json.dumps(r), flush=True)
        results["levels"].append(r)
        if args.json:  # written after every level, so a cut run still leaves what it measured
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
    failed = warm["error"] or any(r["requests"] == 0 for r in results["levels"])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
