"""experiments/bench/train_throughput.py -- the Python baseline for train_throughput: the
quickstart Llama model and batch written as an ordinary PyTorch training loop.

Same architecture (RMSNorm, RoPE rotate-half, SwiGLU, grouped-query attention), same batch,
AdamW, clipping and bf16 CPU autocast as lmforge; prints one JSON object per precision.
Usage: python3 train_throughput.py CONFIG [STEPS] [THREADS]
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def rope(x, theta):  # x (B, H, T, D)
    d, t = x.shape[-1], x.shape[-2]
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float) / d)
    freqs = torch.outer(torch.arange(t, dtype=torch.float), inv_freq)
    emb = torch.cat([freqs, freqs], -1)
    x1, x2 = x.chunk(2, -1)
    return x * emb.cos().to(x.dtype) + torch.cat([-x2, x1], -1) * emb.sin().to(x.dtype)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, kv, dim = c["n_heads"], c["n_kv_heads"], c["hidden_size"]
        self.h, self.kv, self.hd, self.theta = h, kv, dim // h, c.get("rope_theta", 10000.0)
        self.q_proj = nn.Linear(dim, h * self.hd, bias=False)
        self.k_proj = nn.Linear(dim, kv * self.hd, bias=False)
        self.v_proj = nn.Linear(dim, kv * self.hd, bias=False)
        self.o_proj = nn.Linear(h * self.hd, dim, bias=False)
        ffn = c["intermediate_size"]
        self.gate_proj = nn.Linear(dim, ffn, bias=False)
        self.up_proj = nn.Linear(dim, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, dim, bias=False)
        self.input_layernorm = RMSNorm(dim, 1e-5)
        self.post_attention_layernorm = RMSNorm(dim, 1e-5)

    def attention(self, x):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        q, k = rope(q, self.theta), rope(k, self.theta)
        k = k.repeat_interleave(self.h // self.kv, 1)
        v = v.repeat_interleave(self.h // self.kv, 1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.hd)
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        y = torch.softmax(scores.masked_fill(mask, float("-inf")), -1).to(v.dtype) @ v
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))

    def forward(self, x):
        x = x + self.attention(self.input_layernorm(x))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.norm = RMSNorm(c["hidden_size"], 1e-5)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def forward(self, tokens):
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def main():
    cfg = yaml.safe_load(open(sys.argv[1]))
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(threads)
    mc, tc = cfg["model"], cfg["train"]
    b, t = tc["micro_batch_size"], tc["seq_len"]
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = Llama(mc)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
        data = torch.randint(0, 256, (200000,))

        def step():
            starts = torch.randint(0, data.numel() - t - 1, (b,))
            idx = starts[:, None] + torch.arange(t + 1)
            w = data[idx]
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(w[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return loss.item()

        for _ in range(3):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        elapsed = time.perf_counter() - start
        print(json.dumps({"impl": "pytorch", "precision": precision, "torch": torch.__version__,
                          "params": sum(p.numel() for p in model.parameters()),
                          "batch": b, "seq_len": t, "steps": steps, "threads": threads,
                          "tokens_per_s": steps * b * t / elapsed}), flush=True)


if __name__ == "__main__":
    main()
