#!/usr/bin/env python3
"""A plain-PyTorch llama forward (no transformers), as the reference for `wick probe`.

    python3 benches/gpu/reference.py MODEL_DIR --tokens 1,2,3 --steps 32 [--device cuda|cpu] \
        [--compute native|f32] --json OUT.json

Reads config.json and *.safetensors of a Hugging Face llama folder (the safetensors format parsed by
hand), runs the prompt, and writes
  {"logits": [f32 logits of the last prompt position],
   "greedy": [`steps` greedy token ids continuing the prompt; greedy[0] = argmax(logits)],
   "margins": [top-1 minus top-2 logit at each greedy step, to tell near-ties from real mismatches],
   "top5": [[ids, logits] of the 5 best tokens at each greedy step],
   "follow": with --follow WICK.json, wick's greedy tokens scored by the reference (teacher-forced):
             {"greedy": wick's ids, "best": the reference's argmax at each step, "gap": best logit minus
             the logit of wick's token},
   ...}
The math follows Hugging Face's LlamaForCausalLM: RMSNorm computed in f32 then cast back to the
activation dtype before the weight multiply, rotary embeddings in the "halves" style (rotate_half)
with cos/sin computed in f32 and cast, grouped-query attention with a causal mask (scaled dot-product
attention, softmax in f32), a SwiGLU MLP, the final norm and an untied lm_head. With --compute native
(the default) everything runs in the checkpoint's dtype (bf16 on the GPU); --compute f32 upcasts the
weights for a higher-precision reference. Decoding uses a KV cache (one token per step after the
prompt), as a server does.
"""

import argparse
import glob
import json
import math
import os
import time

import torch
import torch.nn.functional as F

ST_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def load_safetensors(path, device):
    """Every tensor of one .safetensors file, parsed by hand, moved to `device`."""
    out = {}
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        base = 8 + n
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            start, end = meta["data_offsets"]
            buf = bytearray(end - start)
            f.seek(base + start)
            f.readinto(buf)
            dtype = ST_DTYPES[meta["dtype"]]
            t = torch.frombuffer(buf, dtype=dtype) if end > start else torch.empty(0, dtype=dtype)
            out[name] = t.reshape(meta["shape"]).to(device)
    return out


class Llama:
    def __init__(self, model_dir, device, compute):
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        self.h = c["hidden_size"]
        self.n_layers = c["num_hidden_layers"]
        self.n_heads = c["num_attention_heads"]
        self.n_kv = c.get("num_key_value_heads") or self.n_heads
        self.hd = c.get("head_dim") or self.h // self.n_heads
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.theta = c.get("rope_theta", 10000.0)
        self.w = {}
        for path in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
            self.w.update(load_safetensors(path, device))
        if c.get("tie_word_embeddings") and "lm_head.weight" not in self.w:
            self.w["lm_head.weight"] = self.w["model.embed_tokens.weight"]
        self.file_dtype = self.w["model.embed_tokens.weight"].dtype
        if compute == "f32":
            self.w = {k: v.float() for k, v in self.w.items()}
        self.dtype = self.w["model.embed_tokens.weight"].dtype
        self.device = device
        # HF: inv_freq = 1 / theta^(2i/d), in f32.
        self.inv_freq = 1.0 / (
            self.theta ** (torch.arange(0, self.hd, 2, dtype=torch.int64, device=device).float() / self.hd)
        )
        self.cache = [None] * self.n_layers  # per layer (k, v): [1, n_kv, S, hd]

    def rms_norm(self, x, w):
        dt = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * xf.to(dt)

    def rope(self, positions):
        freqs = positions.float()[:, None] * self.inv_freq[None, :]  # [T, hd/2], f32
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    @staticmethod
    def rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        return torch.cat((-x2, x1), dim=-1)

    def forward(self, ids, all_positions=False):
        """Runs `ids` (a list) after what is already in the cache; returns f32 logits of the last one
        (of every one with all_positions)."""
        w, T = self.w, len(ids)
        start = 0 if self.cache[0] is None else self.cache[0][0].shape[2]
        positions = torch.arange(start, start + T, device=self.device)
        cos, sin = self.rope(positions)  # [T, hd]
        x = w["model.embed_tokens.weight"][torch.tensor(ids, device=self.device)][None]  # [1, T, h]
        for n in range(self.n_layers):
            p = f"model.layers.{n}"
            r = self.rms_norm(x, w[f"{p}.input_layernorm.weight"])
            q = F.linear(r, w[f"{p}.self_attn.q_proj.weight"]).view(1, T, self.n_heads, self.hd).transpose(1, 2)
            k = F.linear(r, w[f"{p}.self_attn.k_proj.weight"]).view(1, T, self.n_kv, self.hd).transpose(1, 2)
            v = F.linear(r, w[f"{p}.self_attn.v_proj.weight"]).view(1, T, self.n_kv, self.hd).transpose(1, 2)
            q = q * cos + self.rotate_half(q) * sin
            k = k * cos + self.rotate_half(k) * sin
            if self.cache[n] is not None:
                k = torch.cat((self.cache[n][0], k), dim=2)
                v = torch.cat((self.cache[n][1], v), dim=2)
            self.cache[n] = (k, v)
            group = self.n_heads // self.n_kv
            kk = k.repeat_interleave(group, dim=1)  # GQA: query head j reads kv head j // group
            vv = v.repeat_interleave(group, dim=1)
            S = kk.shape[2]
            # Query i (absolute position start+i) sees keys 0..start+i.
            mask = torch.ones(T, S, dtype=torch.bool, device=self.device).tril(diagonal=S - T)
            a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, scale=1.0 / math.sqrt(self.hd))
            a = a.transpose(1, 2).reshape(1, T, self.n_heads * self.hd)
            x = x + F.linear(a, w[f"{p}.self_attn.o_proj.weight"])
            r = self.rms_norm(x, w[f"{p}.post_attention_layernorm.weight"])
            g = F.linear(r, w[f"{p}.mlp.gate_proj.weight"])
            u = F.linear(r, w[f"{p}.mlp.up_proj.weight"])
            x = x + F.linear(F.silu(g) * u, w[f"{p}.mlp.down_proj.weight"])
        x = self.rms_norm(x if all_positions else x[:, -1:], w["model.norm.weight"])
        logits = F.linear(x, w["lm_head.weight"])[0].float()
        return logits if all_positions else logits[-1]

    def reset(self):
        self.cache = [None] * self.n_layers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--tokens", required=True, help="comma-separated prompt token ids")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compute", choices=["native", "f32"], default="native")
    ap.add_argument("--follow", help="a `wick probe` JSON: also score wick's greedy tokens (teacher-forced)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()

    # Exact math in the reference: no TF32, no reduced-precision bf16/f16 reductions in cuBLAS.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False

    t0 = time.time()
    tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    with torch.inference_mode():
        model = Llama(args.model_dir, args.device, args.compute)
        t_load = time.time() - t0
        logits = model.forward(tokens)
        prompt_logits = logits.cpu()
        greedy, margins, top5 = [], [], []
        for step in range(args.steps):
            # argmax takes the first of equal maxima; bf16 logits tie often, so the margin is kept too.
            greedy.append(int(torch.argmax(logits)))
            top = torch.topk(logits, 5)
            margins.append(float(top.values[0] - top.values[1]))
            top5.append([[int(i) for i in top.indices], [float(v) for v in top.values]])
            if step + 1 < args.steps:
                logits = model.forward([greedy[-1]])
        follow = None
        if args.follow:
            # Teacher-forced along wick's continuation: at each step, how far below the reference's best
            # is the token wick chose, given the same history. This checks every step even after the
            # two greedy sequences part at a near-tie.
            with open(args.follow) as f:
                wick_greedy = json.load(f)["greedy"]
            model.reset()
            seq = tokens + wick_greedy[:-1]
            all_logits = model.forward(seq, all_positions=True)[len(tokens) - 1 :]
            follow = {"greedy": wick_greedy, "best": [], "gap": []}
            for step, tok in enumerate(wick_greedy):
                row = all_logits[step]
                best = int(torch.argmax(row))
                follow["best"].append(best)
                follow["gap"].append(float(row[best] - row[tok]))
    out = {
        "follow": follow,
        "logits": prompt_logits.tolist(),
        "greedy": greedy,
        "margins": margins,
        "top5": top5,
        "dtype": {torch.bfloat16: "bf16", torch.float16: "f16", torch.float32: "f32"}[model.file_dtype],
        "compute": args.compute,
        "device": args.device,
        "tokens": tokens,
        "seconds": {"load": round(t_load, 2), "total": round(time.time() - t0, 2)},
    }
    with open(args.json, "w") as f:
        json.dump(out, f)
    print(json.dumps({k: out[k] for k in ("dtype", "compute", "device", "greedy", "seconds")}))


if __name__ == "__main__":
    main()
