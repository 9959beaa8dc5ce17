#!/usr/bin/env python3
"""onnxruntime's real-time factor on the same voice and sentences as benches/speech.rs (2 threads,
scales [0, 1, 0], warm, median of 5). Run by benches/speech_compare.sh."""
import json
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

onnx_path = sys.argv[1]
fixture = json.load(open("tests/fixtures/joe_parity.json"))
rate = json.load(open(onnx_path + ".json"))["audio"]["sample_rate"]
so = ort.SessionOptions()
so.intra_op_num_threads = 2
so.inter_op_num_threads = 1
sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
scales = np.array([0.0, 1.0, 0.0], dtype=np.float32)
print(f"onnxruntime {ort.__version__}, 2 threads, scales [0, 1, 0], warm, median of 5")
print("| input | ids | audio s | synthesis s | RTF |")
print("|---|---|---|---|---|")
for item in fixture["items"]:
    x = np.array([item["ids"]], dtype=np.int64)
    feed = {"input": x, "input_lengths": np.array([x.shape[1]], dtype=np.int64), "scales": scales}
    for _ in range(2):
        audio = sess.run(["output"], feed)[0]
    times = []
    for _ in range(5):
        t = time.perf_counter()
        audio = sess.run(["output"], feed)[0]
        times.append(time.perf_counter() - t)
    seconds = audio.size / rate
    t = statistics.median(times)
    print(f"| {item['text']} | {x.shape[1]} | {seconds:.3f} | {t:.3f} | {t / seconds:.3f} |")
