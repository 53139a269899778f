#!/usr/bin/env python3
"""A PyTorch reference of the Llama family (HF transformers' Llama and Qwen2 semantics), written from the architecture's
definition: RMSNorm (float32, cast back, times the weight), rotary over the whole head (rotate_half, cos/sin of
cat(freqs, freqs), "linear" and "llama3" scaling of the inverse frequencies), grouped-query attention (k/v heads
repeated, multi-query when num_key_value_heads is 1) with scale 1/sqrt(head_dim), SwiGLU MLP down(silu(gate(x)) * up(x)),
a final norm and lm_head (or embed_tokens.weight when tie_word_embeddings). Llama has q/k/v/o biases when attention_bias
and gate/up/down biases when mlp_bias; Qwen2 always has q/k/v biases and never o_proj or MLP biases. Every computation is
float32, whatever dtype the folder's weights are stored in (F32, F16, BF16; one file or shards with an index).

  python3 llama_reference.py logits MODEL_DIR IDS_JSON OUT.f32   # logits [rows, seq, vocab] as raw float32, row-major
  python3 llama_reference.py greedy MODEL_DIR IDS_JSON N         # N argmax tokens per row (full recompute each step,
      # no stop at EOS, ties to the lowest id), printed one row a line, comma-separated
  python3 llama_reference.py write CASES_JSON   # one process for every case (importing torch is slow)
  python3 llama_reference.py train CONFIG_JSON BLOCK BATCH STEPS THREADS [cpu|cuda]   # AdamW steps; prints tokens/s

`write` takes [{"dir", "seed", "ids": [[...], ...], "config": {HF field: value}, "dtype", "shards", "init_std"}, ...]:
"config" overrides the tiny defaults of its model_type (LLAMA or QWEN2 below), "dtype" is float32 (default), bfloat16
or float16, "shards" (default 1) splits the tensors, in state-dict order, into model-0000K-of-0000N.safetensors plus
model.safetensors.index.json as transformers writes them (one model.safetensors when 1), "init_std" (default 0.02) is
the weight matrices' scale; norm weights are 1 +- 0.1 and biases 0.02-scale, so a missed norm or bias shows. Each dir
gets config.json, generation_config.json, the weights (its own safetensors writer), ids.json, reference_logits.f32
(computed from the weights as saved, rounding included) and reference_greedy.json (8 new tokens a row, as `greedy`;
a greedy step whose top two logits lie within 1e-4 is reported on stderr). Rows of ids all have one length (no padding).
The three layouts the project supports, tiny enough for seconds. At hidden 64, std 0.02 leaves attention almost uniform
(a missing rotary moves logits by ~3e-3, ignored llama3 scaling by ~7e-4, and greedy repeats the last token), so these
use init_std 0.2 (about what 0.02 is at hidden 4096, relative to 1/sqrt(fan_in)): logits std ~1.6, and those bugs
move them by 3 to 7.

  [{"dir": "llama-bf16", "seed": 1, "dtype": "bfloat16", "shards": 2, "init_std": 0.2,
    "ids": [[1, 5, 9, 200, 31, 7, 44, 120, 3, 250], [1, 300, 2, 8, 64, 0, 11, 13, 17, 19]],
    "config": {"num_key_value_heads": 2, "tie_word_embeddings": true, "rope_theta": 500000.0, "rope_scaling":
      {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
       "original_max_position_embeddings": 64}}},
   {"dir": "qwen2-f32", "seed": 2, "shards": 3, "init_std": 0.2, "ids": [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]],
    "config": {"model_type": "qwen2", "num_key_value_heads": 2, "eos_token_id": [2, 3]}},
   {"dir": "llama-mqa", "seed": 3, "init_std": 0.2, "ids": [[10, 20, 30, 40, 50, 60, 70, 80]],
    "config": {"num_key_value_heads": 1, "attention_bias": true, "mlp_bias": true}}]

Needs Debian's python3-torch and numpy (libopenblas0-pthread for speed); nothing else. Assumes a little-endian machine.
"""
import json, math, os, struct, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Config:
    def __init__(self, d):
        self.model_type = d.get("model_type", "llama")
        if self.model_type not in ("llama", "qwen2"):
            raise ValueError(f"model_type {self.model_type!r}: only llama and qwen2")
        if d.get("hidden_act", "silu") != "silu" or d.get("use_sliding_window", False):
            raise ValueError("only hidden_act silu, and no sliding window")
        self.vocab_size = d["vocab_size"]; self.hidden_size = d["hidden_size"]
        self.intermediate_size = d["intermediate_size"]; self.num_hidden_layers = d["num_hidden_layers"]
        self.num_attention_heads = d["num_attention_heads"]
        self.num_key_value_heads = d.get("num_key_value_heads") or self.num_attention_heads
        self.head_dim = d.get("head_dim") or self.hidden_size // self.num_attention_heads
        self.rms_norm_eps = d.get("rms_norm_eps", 1e-6); self.rope_theta = d.get("rope_theta", 10000.0)
        self.rope_scaling = d.get("rope_scaling")
        self.tie_word_embeddings = d.get("tie_word_embeddings", False)
        qwen2 = self.model_type == "qwen2"
        self.qkv_bias = qwen2 or d.get("attention_bias", False)
        self.o_bias = not qwen2 and d.get("attention_bias", False)
        self.mlp_bias = not qwen2 and d.get("mlp_bias", False)


def inverse_frequencies(c):
    """HF's _compute_default_rope_parameters, then the linear or llama3 scaling of modeling_rope_utils, in float32."""
    dim = c.head_dim
    inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    s = c.rope_scaling
    kind = None if s is None else s.get("rope_type", s.get("type"))
    if kind in (None, "default"):
        return inv_freq
    if kind == "linear":
        return inv_freq / s["factor"]
    if kind != "llama3":
        raise ValueError(f"rope_scaling {kind!r}: only linear and llama3")
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_context = s["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths (low frequencies) are divided by factor, short ones kept, the band between interpolated.
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * c.head_dim, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, bias=c.o_bias)

    def forward(self, x, cos, sin):
        c, (b, t, _) = self.c, x.shape
        q = self.q_proj(x).view(b, t, c.num_attention_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # repeat_kv: query head h reads key/value head h // (heads / kv_heads).
        groups = c.num_attention_heads // c.num_key_value_heads
        k = k[:, :, None].expand(b, c.num_key_value_heads, groups, t, c.head_dim).reshape(b, -1, t, c.head_dim)
        v = v[:, :, None].expand(b, c.num_key_value_heads, groups, t, c.head_dim).reshape(b, -1, t, c.head_dim)
        scores = (q @ k.transpose(-1, -2)) * c.head_dim ** -0.5
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        out = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, t, c.num_attention_heads * c.head_dim))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):  # modules registered in HF's order, so state_dict() lists tensors as transformers does
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, cos, sin):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.register_buffer("inv_freq", inverse_frequencies(c), persistent=False)

    def forward(self, ids):
        angles = torch.outer(torch.arange(ids.shape[1], dtype=torch.float32, device=ids.device), self.inv_freq)
        emb = torch.cat((angles, angles), dim=-1)
        x = self.embed_tokens(ids)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)


class ForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.model = Model(c)
        # Tied: no lm_head parameter at all, so state_dict() (and the files) lack lm_head.weight, as transformers saves.
        self.lm_head = None if c.tie_word_embeddings else nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def forward(self, ids):
        h = self.model(ids)
        return h @ self.model.embed_tokens.weight.T if self.lm_head is None else self.lm_head(h)


# safetensors dtype name -> (torch dtype, how a float32 tensor becomes its little-endian bytes)
DTYPES = {
    "F32": (torch.float32, lambda t: t.to(torch.float32).numpy().astype("<f4").tobytes()),
    "F16": (torch.float16, lambda t: t.to(torch.float16).numpy().astype("<f2").tobytes()),
    "BF16": (torch.bfloat16, lambda t: t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()),
}
ST_NAME = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def write_safetensors(path, tensors, st_dtype):
    """The safetensors layout: an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and
    [begin, end) byte offsets into the data that follows (padded with spaces to 8 bytes), then the raw little-endian data.
    Returns the data's size in bytes."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        blob = DTYPES[st_dtype][1](tensors[name].detach().contiguous())
        header[name] = {"dtype": st_dtype, "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    return offset


def read_safetensors(path):
    """Every tensor of one file, as float32."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        tensor = torch.frombuffer(bytearray(data[b:e]), dtype=DTYPES[info["dtype"]][0])
        tensors[name] = tensor.to(torch.float32).reshape(info["shape"])
    return tensors


def save_weights(model_dir, state, dtype, shards):
    """One model.safetensors, or the tensors (in state-dict order) split into `shards` non-empty files of about equal
    size, named and indexed as transformers' save_pretrained does."""
    st_dtype = ST_NAME[dtype]
    if shards == 1:
        write_safetensors(f"{model_dir}/model.safetensors", state, st_dtype)
        return
    names = list(state)
    assert 1 < shards <= len(names), f"{shards} shards for {len(names)} tensors"
    sizes = [state[n].numel() * torch.empty(0, dtype=DTYPES[st_dtype][0]).element_size() for n in names]
    total, done, groups = sum(sizes), 0, [[]]
    for i, (name, size) in enumerate(zip(names, sizes)):
        to_open = shards - len(groups)
        if groups[-1] and to_open > 0 and (len(names) - i <= to_open or done >= len(groups) * total / shards):
            groups.append([])
        groups[-1].append(name)
        done += size
    weight_map, total_size = {}, 0
    for k, group in enumerate(groups):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        total_size += write_safetensors(f"{model_dir}/{file}", {n: state[n] for n in group}, st_dtype)
        weight_map.update({n: file for n in group})
    with open(f"{model_dir}/model.safetensors.index.json", "w") as f:
        f.write(json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n")


def load(model_dir):
    """A folder's model in float32: config.json, and model.safetensors or the shards its index names."""
    config = Config(json.load(open(f"{model_dir}/config.json")))
    index = f"{model_dir}/model.safetensors.index.json"
    if os.path.exists(index):
        state = {}
        for file in sorted(set(json.load(open(index))["weight_map"].values())):
            state.update(read_safetensors(f"{model_dir}/{file}"))
    else:
        state = read_safetensors(f"{model_dir}/model.safetensors")
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # transformers ties it to embed_tokens whatever the file holds
    model = ForCausalLM(config)
    model.load_state_dict(state, strict=True)
    return model.eval()


# Tiny models in Hugging Face's config.json fields; a case's "config" overrides any of them.
LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 320, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
    "hidden_act": "silu", "max_position_embeddings": 128, "initializer_range": 0.02, "rms_norm_eps": 1e-5,
    "pretraining_tp": 1, "use_cache": True, "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": False,
    "attention_dropout": 0.0, "mlp_bias": False, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
    "torch_dtype": "float32",
}
QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 320, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
    "hidden_act": "silu", "max_position_embeddings": 128, "initializer_range": 0.02, "rms_norm_eps": 1e-6,
    "use_cache": True, "rope_theta": 1000000.0, "rope_scaling": None, "attention_dropout": 0.0,
    "use_sliding_window": False, "sliding_window": 128, "max_window_layers": 2, "tie_word_embeddings": False,
    "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
}


def random_model(overrides, seed, init_std=0.02):
    torch.manual_seed(seed)
    d = dict(QWEN2 if overrides.get("model_type") == "qwen2" else LLAMA, **overrides)
    if d["model_type"] == "llama":  # transformers' LlamaConfig writes head_dim, derived unless given
        d.setdefault("head_dim", d["hidden_size"] // d["num_attention_heads"])
    model = ForCausalLM(Config(d))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn_like(p))
            else:
                p.copy_(init_std * torch.randn_like(p))
    return d, model


def greedy(model, ids, n):
    """n argmax tokens after each row, recomputing the whole sequence each step (no cache), not stopping at EOS."""
    seq = ids
    with torch.no_grad():
        for step in range(n):
            last = model(seq)[:, -1]
            top = last.topk(2, dim=-1).values
            if (top[:, 0] - top[:, 1]).min() < 1e-4:
                print(f"greedy step {step}: top two logits within 1e-4, a near tie", file=sys.stderr)
            seq = torch.cat((seq, last.argmax(-1, keepdim=True)), dim=1)
    return seq[:, ids.shape[1]:].tolist()


def write(cases_json):
    torch.set_num_threads(1)
    for case in json.load(open(cases_json)):
        d, model = random_model(case.get("config", {}), case.get("seed", 0), case.get("init_std", 0.02))
        dtype = case.get("dtype", d["torch_dtype"])
        d["torch_dtype"] = dtype
        out = case["dir"]
        os.makedirs(out, exist_ok=True)
        with open(f"{out}/config.json", "w") as f:
            f.write(json.dumps(d, indent=2, sort_keys=True) + "\n")
        generation = {"_from_model_config": True, "bos_token_id": d["bos_token_id"], "eos_token_id": d["eos_token_id"]}
        with open(f"{out}/generation_config.json", "w") as f:
            f.write(json.dumps(generation, indent=2, sort_keys=True) + "\n")
        save_weights(out, model.state_dict(), dtype, case.get("shards", 1))
        with open(f"{out}/ids.json", "w") as f:
            json.dump(case["ids"], f)
        logits(out, f"{out}/ids.json", f"{out}/reference_logits.f32")  # from the files: the weights as rounded
        with open(f"{out}/reference_greedy.json", "w") as f:
            json.dump(greedy(load(out), torch.tensor(case["ids"], dtype=torch.long), 8), f)


def logits(model_dir, ids_json, out_path):
    torch.set_num_threads(1)
    model = load(model_dir)
    with torch.no_grad():
        out = model(torch.tensor(json.load(open(ids_json)), dtype=torch.long)).contiguous()
    with open(out_path, "wb") as f:
        f.write(out.numpy().astype("<f4").tobytes())


def train(config_json, block, batch, steps, threads, device="cpu"):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c = Config(json.load(open(config_json)))
    model = ForCausalLM(c).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=3e-4, betas=(0.9, 0.95))
    data = torch.randint(0, c.vocab_size, (steps + 5, batch, block), device=device)
    def step(i):
        ids = data[i]
        loss = F.cross_entropy(model(ids)[:, :-1].reshape(-1, c.vocab_size), ids[:, 1:].reshape(-1))
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
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "logits":
        logits(sys.argv[2], sys.argv[3], sys.argv[4])
    elif mode == "greedy":
        torch.set_num_threads(1)
        rows = greedy(load(sys.argv[2]), torch.tensor(json.load(open(sys.argv[3])), dtype=torch.long), int(sys.argv[4]))
        print("\n".join(",".join(map(str, row)) for row in rows))
    elif mode == "write":
        write(sys.argv[2])
    elif mode == "train":
        train(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7] if len(sys.argv) > 7 else "cpu")
    else:
        sys.exit(__doc__)
