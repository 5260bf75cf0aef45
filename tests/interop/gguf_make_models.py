# tests/interop/gguf_make_models.py -- random-weight HF directories (llama GQA untied, mistral with a
# window, qwen2 with q/k/v biases and a tied head) with GPT-2's BPE as tokenizer.json, for gguf_test.sh.
# Usage: gguf_make_models.py GPT3_ENCODER_DIR OUT_DIR. Safetensors written by hand (plain torch here).
import json, os, struct, sys

import torch

enc_dir, out = sys.argv[1], sys.argv[2]
vocab = json.load(open(os.path.join(enc_dir, "encoder.json")))
merges = [l for l in open(os.path.join(enc_dir, "vocab.bpe"), encoding="utf-8").read().split("\n")
          if l and not l.startswith("#version")]
tokenizer = {"version": "1.0", "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "special": True}],
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
             "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
tok_config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
              "chat_template": "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}"}

def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))

# Sizes: rows (hidden 64, ffn 128) are multiples of q8_0/q4_0's 32-value blocks (the "odd" model's
# hidden 48 is not). Embedding and head std 1 give logits of std ~8: a peaked next-token
# distribution, so greedy decoding has clear winners; the rest std 0.3.
V, L, H, F = 50257, 2, 4, 128
models = {
    "llama": dict(kv=2, bias=False, tied=False, extra={"model_type": "llama", "attention_bias": False, "mlp_bias": False}),
    "mistral": dict(kv=1, bias=False, tied=False, extra={"model_type": "mistral", "sliding_window": 4096}),
    "qwen2": dict(kv=2, bias=True, tied=True, extra={"model_type": "qwen2", "use_sliding_window": False}),
    "odd": dict(kv=2, bias=False, tied=False, C=48, extra={"model_type": "llama"}),
    "gelu": dict(kv=2, bias=False, tied=False, extra={"model_type": "llama", "hidden_act": "gelu"}),
}
for name, m in models.items():
    g = torch.Generator().manual_seed(len(name))
    r = lambda *shape, std=0.3: torch.randn(*shape, generator=g) * std
    C = m.get("C", 64)
    D = C // H
    t = {"model.embed_tokens.weight": r(V, C, std=1.0), "model.norm.weight": 1 + 0.1 * r(C)}
    if not m["tied"]:
        t["lm_head.weight"] = r(V, C, std=1.0)
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = r(H * D, C)
        t[p + "self_attn.k_proj.weight"] = r(m["kv"] * D, C)
        t[p + "self_attn.v_proj.weight"] = r(m["kv"] * D, C)
        t[p + "self_attn.o_proj.weight"] = r(C, H * D)
        if m["bias"]:
            for k, n in (("q", H), ("k", m["kv"]), ("v", m["kv"])):
                t[p + f"self_attn.{k}_proj.bias"] = r(n * D)
        t[p + "mlp.gate_proj.weight"], t[p + "mlp.up_proj.weight"], t[p + "mlp.down_proj.weight"] = r(F, C), r(F, C), r(C, F)
        t[p + "input_layernorm.weight"] = 1 + 0.1 * r(C)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * r(C)
    config = {"vocab_size": V, "hidden_size": C, "num_hidden_layers": L, "num_attention_heads": H,
              "num_key_value_heads": m["kv"], "intermediate_size": F, "max_position_embeddings": 256,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": m["tied"], "hidden_act": "silu",
              "bos_token_id": 50256, "eos_token_id": 50256}
    config.update(m["extra"])
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    json.dump(config, open(os.path.join(d, "config.json"), "w"))
    json.dump(tokenizer, open(os.path.join(d, "tokenizer.json"), "w"))
    json.dump(tok_config, open(os.path.join(d, "tokenizer_config.json"), "w"))
    save_safetensors(os.path.join(d, "model.safetensors"), t)
