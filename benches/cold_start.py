"""Standby to first token: the time a request to a deployment in Standby waits for its first token.

    python3 benches/cold_start.py [runs, default 20]

Starts `target/release/wick serve` on the default chat model with a 1 s idle timeout, and for each
run waits until `/v1/models` reports the deployment in Standby (its weights unloaded), then streams a
one-token chat completion and times it from sending the request to the first content chunk. Prints
every time and the median. `WICK_CPU_VARIANT` is passed through, so each kernel variant can be timed.
Standard library only.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

MODEL = "smollm2-135m-instruct"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url):
    with urllib.request.urlopen(f"{url}/v1/models/{MODEL}", timeout=5) as r:
        return json.load(r)["status"]


def first_token_seconds(url):
    body = json.dumps({
        "model": MODEL, "stream": True, "max_tokens": 1, "temperature": 0,
        "messages": [{"role": "user", "content": "Hi"}],
    }).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", body, {"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as r:
        for line in r:
            if not line.startswith(b"data: {"):
                continue
            delta = json.loads(line[6:])["choices"]
            if delta and delta[0]["delta"].get("content"):
                return time.perf_counter() - start
    raise RuntimeError("no content chunk")


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen(
            ["target/release/wick", "serve", "--model", MODEL, "--idle-timeout", "1s", "--no-pull",
             "--port", str(port), "--data-dir", data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while True:
                try:
                    status(url)
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.1)
            times = []
            for _ in range(runs):
                while status(url) != "Standby":
                    time.sleep(0.1)
                times.append(first_token_seconds(url))
                print(f"{times[-1] * 1000:.0f} ms", flush=True)
            print(f"variant {os.environ.get('WICK_CPU_VARIANT', 'best')}: {runs} cold starts, "
                  f"median {statistics.median(times) * 1000:.0f} ms, "
                  f"min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
