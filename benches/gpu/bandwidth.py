#!/usr/bin/env python3
"""Device memory bandwidth, measured with torch: repeated device-to-device copies of a large tensor.

    python3 benches/gpu/bandwidth.py [--gib 2] [--iters 20] [--device cuda] [--json OUT.json]

Each copy reads and writes `gib` GiB, so one copy moves 2 x gib GiB; the rate is those bytes over the
time between CUDA events around the copy. Prints (and writes with --json)
  {"device": name, "bytes_per_copy": ..., "gbps_median": ..., "gbps_best": ..., "gbps_all": [...]}
in GB/s (1e9 bytes per second). The median is what run.sh uses for the decode floor: a batch-1
decode step must at least read every weight once, so weights_bytes / bandwidth is its lower bound.
A plain copy reaches roughly 85-92% of the datasheet figure (H100 SXM 3.35 TB/s, H200 4.8 TB/s).
"""

import argparse
import json
import statistics

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=2.0, help="size of the source tensor in GiB")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json")
    args = ap.parse_args()

    dev = torch.device(args.device)
    n = int(args.gib * (1 << 30)) // 4
    src = torch.empty(n, dtype=torch.float32, device=dev).uniform_()
    dst = torch.empty_like(src)
    moved = 2 * n * 4  # one read + one write of every byte
    for _ in range(3):  # warm-up
        dst.copy_(src)
    torch.cuda.synchronize(dev)
    rates = []
    for _ in range(args.iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        rates.append(moved / (start.elapsed_time(end) / 1e3) / 1e9)
    out = {
        "device": torch.cuda.get_device_name(dev),
        "bytes_per_copy": moved,
        "gbps_median": round(statistics.median(rates), 1),
        "gbps_best": round(max(rates), 1),
        "gbps_all": [round(r, 1) for r in rates],
    }
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
