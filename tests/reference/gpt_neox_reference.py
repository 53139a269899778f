#!/usr/bin/env python3
"""A PyTorch reference of the GPT-NeoX architecture MLNetFinetune trains, written from the architecture's
definition (HF transformers' GPTNeoX semantics): it loads our model directory (config.json + model.safetensors,
HF names) and prints logits for given ids; or writes a model directory of its own (random weights, biases
included, a tiny config with any HF fields overridden, its own safetensors writer) with the logits for given ids,
which the parity test loads into TorchSharp and ONNX Runtime; or times training steps on random data as a speed baseline.

  python3 gpt_neox_reference.py logits MODEL_DIR IDS_JSON OUT.f32        # logits as raw float32, row-major
  python3 gpt_neox_reference.py write CASES_JSON   # [{"dir", "seed", "ids", "config": {"rotary_pct": 1.0, ...}}, ...]
      # each dir gets config.json + model.safetensors + reference_logits.f32 (one process: importing torch is slow)
  python3 gpt_neox_reference.py train CONFIG_JSON BLOCK BATCH STEPS THREADS [cpu|cuda]  # prints tokens/s

Needs Debian's python3-torch (and libopenblas0-pthread for speed); nothing else.
"""
import json, math, struct, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Config:
    def __init__(self, d):
        self.vocab_size = d["vocab_size"]; self.hidden_size = d["hidden_size"]
        self.num_hidden_layers = d["num_hidden_layers"]; self.num_attention_heads = d["num_attention_heads"]
        self.intermediate_size = d["intermediate_size"]; self.rotary_pct = d.get("rotary_pct", 0.25)
        self.rotary_emb_base = d.get("rotary_emb_base", 10000); self.layer_norm_eps = d.get("layer_norm_eps", 1e-5)
        self.use_parallel_residual = d.get("use_parallel_residual", True)
        self.head_dim = self.hidden_size // self.num_attention_heads
        self.rotary_dim = int(self.head_dim * self.rotary_pct)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.query_key_value = nn.Linear(c.hidden_size, 3 * c.hidden_size)
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        c = self.c
        qkv = self.query_key_value(x).view(b, t, c.num_attention_heads, 3 * c.head_dim).permute(0, 2, 1, 3)
        q, k, v = qkv[..., :c.head_dim], qkv[..., c.head_dim:2 * c.head_dim], qkv[..., 2 * c.head_dim:]
        r = c.rotary_dim
        q = torch.cat((q[..., :r] * cos + rotate_half(q[..., :r]) * sin, q[..., r:]), dim=-1)
        k = torch.cat((k[..., :r] * cos + rotate_half(k[..., :r]) * sin, k[..., r:]), dim=-1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(c.head_dim)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
        out = F.softmax(scores, dim=-1) @ v
        return self.dense(out.transpose(1, 2).reshape(b, t, c.hidden_size))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(c.hidden_size, c.intermediate_size)
        self.dense_4h_to_h = nn.Linear(c.intermediate_size, c.hidden_size)

    def forward(self, x):
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.input_layernorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.attention = Attention(c)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin):
        a = self.attention(self.input_layernorm(x), cos, sin)
        if self.c.use_parallel_residual:
            return x + a + self.mlp(self.post_attention_layernorm(x))
        h = x + a
        return h + self.mlp(self.post_attention_layernorm(h))


class Backbone(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_in = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([Layer(c) for _ in range(c.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids):
        c, t = self.c, ids.shape[1]
        inv_freq = 1.0 / (c.rotary_emb_base ** (torch.arange(0, c.rotary_dim, 2, device=ids.device).float() / c.rotary_dim))
        angles = torch.outer(torch.arange(t, dtype=torch.float32, device=ids.device), inv_freq)
        emb = torch.cat((angles, angles), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = self.embed_in(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.final_layer_norm(x)


class GPTNeoXForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gpt_neox = Backbone(c)
        self.embed_out = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def forward(self, ids):
        return self.embed_out(self.gpt_neox(ids))


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{name}: only F32 is read here"
        b, e = info["data_offsets"]
        tensors[name] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(info["shape"])
    return tensors


def write_safetensors(path, tensors):
    """The safetensors layout: an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and
    [begin, end) byte offsets into the data that follows (padded with spaces to 8 bytes), then the raw little-endian data."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        blob = tensors[name].detach().contiguous().to(torch.float32).numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


# A tiny GPT-NeoX in Hugging Face's config.json field names; `write` overrides any of them from the command line.
TINY = {
    "model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"], "vocab_size": 320, "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256, "rotary_pct": 0.25,
    "rotary_emb_base": 10000, "max_position_embeddings": 64, "layer_norm_eps": 1e-5, "use_parallel_residual": True,
    "hidden_act": "gelu", "bos_token_id": 0, "eos_token_id": 0, "tie_word_embeddings": False, "torch_dtype": "float32",
}


def random_model(overrides, seed):
    """Random weights at a scale that gives sharp, varied logits: every bias and LayerNorm shift non-zero, LayerNorm
    scales away from one, so a mistake in any of them (or in the residual layout, or the rotary split) shows."""
    torch.manual_seed(seed)
    d = dict(TINY, **overrides)
    model = GPTNeoXForCausalLM(Config(d))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("final_layer_norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (1.5 / math.sqrt(p.shape[1])))
    return d, model


def write(cases_json):
    """Each case {"dir", "seed", "ids": [[...], ...], "config": {HF field: value}} becomes a model directory (config.json,
    model.safetensors) holding reference_logits.f32: the logits for its ids, computed from the files just written."""
    import os
    torch.set_num_threads(1)
    for case in json.load(open(cases_json)):
        d, model = random_model(case.get("config", {}), case.get("seed", 0))
        os.makedirs(case["dir"], exist_ok=True)
        with open(f"{case['dir']}/config.json", "w") as f:
            json.dump(d, f, indent=2)
        write_safetensors(f"{case['dir']}/model.safetensors", model.state_dict())
        with open(f"{case['dir']}/ids.json", "w") as f:
            json.dump(case["ids"], f)
        logits(case["dir"], f"{case['dir']}/ids.json", f"{case['dir']}/reference_logits.f32")


def logits(model_dir, ids_json, out_path):
    torch.set_num_threads(1)
    c = Config(json.load(open(f"{model_dir}/config.json")))
    model = GPTNeoXForCausalLM(c)
    model.load_state_dict(read_safetensors(f"{model_dir}/model.safetensors"), strict=True)
    model.eval()
    ids = torch.tensor(json.load(open(ids_json)), dtype=torch.long)
    with torch.no_grad():
        out = model(ids).contiguous()
    with open(out_path, "wb") as f:
        f.write(out.numpy().astype("float32").tobytes())


def train(config_json, block, batch, steps, threads, device="cpu"):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c = Config(json.load(open(config_json)))
    model = GPTNeoXForCausalLM(c).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=3e-4, betas=(0.9, 0.95))
    data = torch.randint(0, c.vocab_size, (steps + 5, batch, block), device=device)
    def step(i):
        ids = data[i]
        out = model(ids)
        loss = F.cross_entropy(out[:, :-1].reshape(-1, c.vocab_size), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for i in range(5):
        step(i)
    sync()
    start = time.perf_counter()
    for i in range(5, steps + 5):
        step(i)
    sync()
    seconds = time.perf_counter() - start
    print(json.dumps({"tokens_per_s": steps * batch * block / seconds, "threads": threads, "torch": torch.__version__}))


if __name__ == "__main__":
    if sys.argv[1] == "logits":
        logits(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "write":
        write(sys.argv[2])
    elif sys.argv[1] == "train":
        train(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7] if len(sys.argv) > 7 else "cpu")
    else:
        sys.exit(__doc__)
