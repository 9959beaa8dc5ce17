#!/usr/bin/env python3
"""Writes a Hugging Face-layout llama folder with RANDOM weights, for Wick's GPU checks.

    python3 benches/gpu/make_llama.py OUT_DIR [--preset 1b|small|tiny] [--dtype bf16|f32] [--seed N]

Only python3 + torch: the .safetensors file is written by hand (8-byte little-endian header length,
a JSON header with dtype/shape/data_offsets per tensor, then the raw bytes), no `safetensors` or
`transformers` package. Weights are drawn on the GPU when there is one (the 1b preset is ~2.2 GB in
bf16 and is generated on the GPU machine, since weights cannot travel there).

The folder holds:
  config.json            LlamaForCausalLM fields (what src/loader/safetensors.rs reads)
  model.safetensors      model.embed_tokens / model.layers.N.* / model.norm / lm_head
  tokenizer.json         a WordLevel tokenizer for the Rust `tokenizers` crate: ids 0-2 are ChatML's
                         special tokens, 3 is <unk>, every other id N is the word "tN"
  tokenizer_config.json  bos/eos tokens and a ChatML chat template (Jinja)

Random weights: matrices ~ N(0, 0.02^2) (gain ~0.9 at hidden 2048, so activations neither blow up nor
vanish), norm weights 1 + N(0, 0.05^2), so logits are spread out and greedy decoding is not degenerate.
"""

import argparse
import ctypes
import json
import os
import sys
import time

import torch

PRESETS = {
    # About 1.1B parameters, shaped like Llama 3.2 1B but with a 32k vocabulary and an untied head.
    "1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32000,
        max_position_embeddings=4096,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
    ),
    # About 20M parameters: for the strict f32 check on the GPU (fast to make and to run in f32).
    "small": dict(
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=8192,
        max_position_embeddings=2048,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
    ),
    # A few MB, for checks on CPU.
    "tiny": dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1024,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
    ),
}

DTYPES = {"bf16": (torch.bfloat16, "BF16"), "f32": (torch.float32, "F32"), "f16": (torch.float16, "F16")}

# ChatML, the same as Wick's built-in fallback (src/loader/chat_template.rs).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2
UNK = "<unk>"  # id 3


def tensor_specs(c):
    """(name, shape, kind) of every tensor, in the Hugging Face layout ([out, in] for linears)."""
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = h // c["num_attention_heads"]
    q_out, kv_out = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    specs = [("model.embed_tokens.weight", (v, h), "matrix")]
    for n in range(c["num_hidden_layers"]):
        p = f"model.layers.{n}"
        specs += [
            (f"{p}.input_layernorm.weight", (h,), "norm"),
            (f"{p}.self_attn.q_proj.weight", (q_out, h), "matrix"),
            (f"{p}.self_attn.k_proj.weight", (kv_out, h), "matrix"),
            (f"{p}.self_attn.v_proj.weight", (kv_out, h), "matrix"),
            (f"{p}.self_attn.o_proj.weight", (h, q_out), "matrix"),
            (f"{p}.post_attention_layernorm.weight", (h,), "norm"),
            (f"{p}.mlp.gate_proj.weight", (i, h), "matrix"),
            (f"{p}.mlp.up_proj.weight", (i, h), "matrix"),
            (f"{p}.mlp.down_proj.weight", (h, i), "matrix"),
        ]
    specs += [("model.norm.weight", (h,), "norm"), ("lm_head.weight", (v, h), "matrix")]
    return specs


def write_safetensors(path, tensors, dtype_tag):
    """tensors: list of (name, CPU contiguous tensor). Writes the file without extra copies."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, t in tensors:
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": dtype_tag, "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # pad so that the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for _, t in tensors:
            nbytes = t.numel() * t.element_size()
            # The tensor's own memory as a buffer (no numpy needed, and no copy).
            f.write((ctypes.c_char * nbytes).from_address(t.data_ptr()))


def tokenizer_json(vocab_size):
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab[UNK] = len(SPECIAL_TOKENS)
    for n in range(len(vocab), vocab_size):
        vocab[f"t{n}"] = n
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for i, t in enumerate(SPECIAL_TOKENS)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="1b")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="where to draw the weights (default: cuda if available)")
    args = ap.parse_args()

    t0 = time.time()
    cfg = dict(PRESETS[args.preset])
    torch_dtype, tag = DTYPES[args.dtype]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)

    tensors, params = [], 0
    for name, shape, kind in tensor_specs(cfg):
        x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        x = x * 0.02 if kind == "matrix" else 1.0 + 0.05 * x
        tensors.append((name, x.to(torch_dtype).cpu().contiguous()))
        params += x.numel()
    write_safetensors(os.path.join(args.out_dir, "model.safetensors"), tensors, tag)

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **cfg,
        "head_dim": cfg["hidden_size"] // cfg["num_attention_heads"],
        "hidden_act": "silu",
        "attention_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": {"bf16": "bfloat16", "f32": "float32", "f16": "float16"}[args.dtype],
    }
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(args.out_dir, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(cfg["vocab_size"]), f)
    with open(os.path.join(args.out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(
            {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": False,
             "chat_template": CHAT_TEMPLATE},
            f,
            indent=2,
        )
    size = os.path.getsize(os.path.join(args.out_dir, "model.safetensors"))
    print(
        json.dumps({"dir": args.out_dir, "preset": args.preset, "dtype": args.dtype, "params": params,
                    "safetensors_bytes": size, "device": device, "seconds": round(time.time() - t0, 2)}),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
