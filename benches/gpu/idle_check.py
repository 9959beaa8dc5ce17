#!/usr/bin/env python3
"""Checks that an idle unload gives the GPU memory back.

    python3 benches/gpu/idle_check.py --wick .device/wick --model DIR --device cuda:0 \
        --log serve_idle.log --json idle_memory.json [--idle-timeout 5s]

Reads the GPU's used memory (nvidia-smi) before starting `wick serve --idle-timeout 5s`, sends one chat
request (which loads the model: weights plus the KV pool, 85% of what is free), reads it again, waits
for the server to log the unload, waits 3 s more and reads it a third time; the server is still
running then. Passes if the unload was logged, the memory went down by more than 1 GiB, and what the
process still holds over the starting point is at most 1.5 GiB (its CUDA context and library
handles, which live as long as the process). Also records the process's own use from
`nvidia-smi --query-compute-apps` where the process id is visible. With --device cpu only the
logged unload is checked.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def smi(args):
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def used_mib():
    out = smi(["--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"]).strip().splitlines()
    return int(out[0]) if out and out[0].strip().isdigit() else None


def proc_mib(pid):
    for line in smi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]).splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid) and parts[1].isdigit():
            return int(parts[1])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wick", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--idle-timeout", default="5s")
    ap.add_argument("--log", required=True)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    res = {"idle_timeout": args.idle_timeout, "before_mib": used_mib()}
    log = open(args.log, "w")
    data_dir = tempfile.mkdtemp(prefix="wick-idle-")
    server = subprocess.Popen(
        [args.wick, "serve", "--model", f"bench={args.model}", "--device", args.device, "--port", str(port),
         "--idle-timeout", args.idle_timeout, "--data-dir", data_dir, "--no-pull"],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    ok, why = False, ""
    try:
        end = time.time() + 90
        while time.time() < end:
            try:
                if urllib.request.urlopen(base + "/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("wick serve did not answer /health within 90 s")
        body = {"model": "bench", "messages": [{"role": "user", "content": "t5 t6 t7"}], "max_tokens": 8}
        req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        t = time.time()
        res["usage"] = json.load(urllib.request.urlopen(req, timeout=300))["usage"]
        res["first_request_s"] = round(time.time() - t, 2)
        res["loaded_mib"], res["proc_loaded_mib"] = used_mib(), proc_mib(server.pid)

        def unloaded():
            with open(args.log, errors="replace") as f:
                return "unloaded" in f.read()

        end = time.time() + 60
        while time.time() < end and not unloaded():
            time.sleep(0.5)
        res["unloaded_logged"] = unloaded()
        time.sleep(3)
        res["after_mib"], res["proc_after_mib"] = used_mib(), proc_mib(server.pid)
        res["server_alive_after"] = server.poll() is None
        if not gpu:
            ok, why = res["unloaded_logged"], "no GPU: only the logged unload is checked"
        elif None in (res["before_mib"], res["loaded_mib"], res["after_mib"]):
            why = "nvidia-smi gave no numbers"
        else:
            given_back = res["loaded_mib"] - res["after_mib"]
            kept = res["after_mib"] - res["before_mib"]
            ok = res["unloaded_logged"] and given_back > 1024 and kept <= 1536
            why = (f"{given_back} MiB given back, {kept} MiB still held by the running process (limit 1536 MiB)"
                   + ("" if res["unloaded_logged"] else "; no unload in the log"))
    except Exception as e:  # noqa: BLE001 - recorded as the failure's cause
        why = f"{type(e).__name__}: {e}"
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    res.update({"pass": bool(ok), "why": why})
    with open(args.json, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
