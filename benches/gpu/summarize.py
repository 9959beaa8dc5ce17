#!/usr/bin/env python3
"""Builds results.md (a Markdown block ready for BENCHMARKS.md) and summary.json from what run.sh left
in its output folder. Missing files are skipped, so it can run after every phase of a cut run.

    python3 benches/gpu/summarize.py OUT_DIR
"""

import json
import os
import sys


def load(out, name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_text(out, name):
    try:
        with open(os.path.join(out, name)) as f:
            return f.read().strip()
    except OSError:
        return None


def fmt(x, digits=2):
    return "n/a" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def main():
    out = sys.argv[1]
    env = load(out, "env.json") or {}
    phases = []
    try:
        with open(os.path.join(out, "phases.tsv")) as f:
            phases = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except OSError:
        pass
    # make_llama.py's last stderr line (in model.log) is a JSON line with the parameter count.
    for line in reversed((read_text(out, "model.log") or "").splitlines()):
        if line.startswith("{") and '"params"' in line:
            try:
                env["params"] = json.loads(line)["params"]
            except ValueError:
                pass
            break
    summary = {"env": env, "phases": [{"phase": p[0], "rc": int(p[1]), "seconds": int(p[2])} for p in phases]}
    md = [f"### GPU run: {env.get('gpu', 'unknown device')}", ""]
    params = env.get("params")
    size = "" if not params else f"{params / 1e9:.2f}B parameters, " if params >= 1e8 else f"{params / 1e6:.1f}M parameters, "
    md.append(f"Driver {env.get('driver', '?')}, torch {env.get('torch', '?')}, wick `{env.get('wick_version', '?')}`, "
              f"model: random llama preset `{env.get('preset', '?')}` in {env.get('dtype', '?')} ({size}{env.get('date', '')}).")
    md.append("")

    # Correctness.
    rows = []
    labels = (("short", f"{env.get('preset', '?')} {env.get('dtype', '?')}, 16-token prompt"),
              ("long", f"{env.get('preset', '?')} {env.get('dtype', '?')}, 600-token prompt"),
              ("f32", "small f32, 600-token prompt"))
    for tag, label in labels:
        c = load(out, f"compare_{tag}.json")
        if not c:
            continue
        vs = (f"{c['rel_err']:.2e} vs f32 answer (<= {c['rel_tol']:.2e}); vs torch {c['dtype']}: {c['rel_err_vs_ref']:.2e}; "
              f"torch {c['dtype']} vs f32: {c['torch_lowp_rel_err']:.2e}" if "torch_lowp_rel_err" in c
              else f"{c['rel_err']:.2e} (<= {c['rel_tol']:g})")
        first = c.get("greedy_first_mismatch")
        greedy = c["greedy"] + ("" if first is None else f", sequences part at step {first}")
        if c.get("greedy_worst_gap") is not None:
            greedy += f", worst gap {c['greedy_worst_gap']:.2e}"
        rows.append(f"| {label} | {vs} | {c['max_abs_diff']:.2e} | "
                    f"{'yes' if c['top1_wick'] == c['top1_ref'] else 'near-tie' if c['pass'] else 'NO'} | "
                    f"{greedy} | {'PASS' if c['pass'] else 'FAIL'} |")
        summary[f"compare_{tag}"] = {k: v for k, v in c.items() if k not in ("greedy_wick", "greedy_ref")}
    if rows:
        md += ["Correctness: `wick probe` against benches/gpu/reference.py (plain PyTorch) on the same random "
               "weights; bf16 runs are scored against the f32 answer, 32 greedy steps:", "",
               "| model, prompt | logits rel. error | max abs diff | top-1 | greedy (32 steps) | result |",
               "|---|---|---|---|---|---|", *rows, ""]
    tests = read_text(out, "wick-tests.summary")
    if tests:
        md += [f"CUDA test binary: {tests}", ""]
        summary["wick_tests"] = tests

    # Decode floor.
    probe, bw = load(out, "probe_short.json"), load(out, "bandwidth.json")
    if probe and bw:
        wb, ms, gbps = probe.get("weights_bytes"), probe.get("decode_ms_batch1"), bw.get("gbps_median")
        floor = wb / (gbps * 1e9) * 1e3 if wb and gbps else None
        ratio = ms / floor if ms and floor else None
        summary["decode"] = {"weights_bytes": wb, "decode_ms_batch1": ms, "bandwidth_gbps": gbps,
                             "floor_ms": floor, "ratio": ratio}
        md += ["Batch-1 decode against the memory-bandwidth floor (every weight read once per step):", "",
               "| weights | measured bandwidth (copy) | floor | wick decode step (median of 64) | wick / floor |",
               "|---|---|---|---|---|",
               f"| {wb / 1e9:.3f} GB | {gbps:.0f} GB/s | {fmt(floor, 3)} ms | {fmt(ms, 3)} ms | {fmt(ratio, 2)}x |", ""]
    elif bw:
        summary["bandwidth_gbps"] = bw.get("gbps_median")
        md += [f"Measured copy bandwidth: {bw.get('gbps_median')} GB/s.", ""]

    # Serving throughput.
    load_res = load(out, "load.json")
    if load_res and load_res.get("levels"):
        summary["load"] = load_res
        md += [f"Serving (`wick serve --max-batch-size 256`, streaming chat, {load_res['prompt_words']}-token prompts, "
               f"max_tokens {load_res['max_tokens']}, end tokens banned, temperature 0, {load_res['duration_s']:g} s per level; "
               f"first request {load_res['warmup_s']} s):", "",
               "| concurrency | output tokens/s | TTFT median | inter-token latency median | requests | errors |",
               "|---|---|---|---|---|---|"]
        for r in load_res["levels"]:
            md.append(f"| {r['concurrency']} | {r['tokens_per_s']} | {fmt(r['ttft_ms_median'], 1)} ms | "
                      f"{fmt(r['itl_ms_median'], 2)} ms | {r['requests']}{' + ' + str(r['incomplete']) + ' cut' if r['incomplete'] else ''} | {r['errors']} |")
        fresh = load(out, "load_fresh.json")
        if fresh and fresh.get("levels"):
            r = fresh["levels"][0]
            summary["load_fresh"] = fresh
            md.append(f"| 1, new connection per request | {r['tokens_per_s']} | {fmt(r['ttft_ms_median'], 1)} ms | "
                      f"{fmt(r['itl_ms_median'], 2)} ms | {r['requests']} | {r['errors']} |")
        md.append("")

    mem = load(out, "idle_memory.json")
    if mem:
        summary["idle_memory"] = mem
        md += [f"Idle unload (`--idle-timeout {mem.get('idle_timeout')}`): GPU memory used {fmt(mem.get('before_mib'))} MiB before "
               f"the server, {fmt(mem.get('loaded_mib'))} MiB loaded, {fmt(mem.get('after_mib'))} MiB after the unload "
               f"(server still running): {'PASS' if mem.get('pass') else 'FAIL'} ({mem.get('why', '')}).", ""]

    if phases:
        md += ["Phases: " + ", ".join(f"{p[0]} {'ok' if p[1] == '0' else 'rc=' + p[1]} ({p[2]} s)" for p in phases), ""]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
