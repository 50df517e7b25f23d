"""GPT-2 (Hugging Face GPT2LMHeadModel's computation) in plain PyTorch, with LoRA adapters.

Written out rather than taken from `transformers` (not on Debian, and bpo's checkpoints are plain
model folders: config.json + model.safetensors under HF GPT-2 tensor names). The conventions are
bpo's (docs/design.md, trainer/model): Conv1D weights are [in, out] (y = x·W + b); LoRA adds
(alpha/r)·(x·A)·B with A [in, r], B [r, out] on attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj;
gelu_new; LayerNorm with biased variance; the LM head is tied to wte.
"""
import json
import math
import os

import torch

import safetensors_io

TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


class Base:
    """A frozen base model: its config and weights (in the compute dtype)."""

    def __init__(self, folder, dtype=torch.float32):
        with open(os.path.join(folder, "config.json")) as f:
            self.config = json.load(f)
        c = self.config
        for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon"):
            if key not in c:
                raise ValueError(f"{folder}/config.json: missing {key}")
        if c.get("activation_function", "gelu_new") != "gelu_new":
            raise ValueError(f"{folder}/config.json: activation_function {c['activation_function']!r}, want gelu_new")
        tensors, _ = safetensors_io.read(os.path.join(folder, "model.safetensors"))
        self.w = {}
        for name, t in tensors.items():
            name = name.removeprefix("transformer.")
            # The tied LM head and HF's causal-mask buffers are not parameters.
            if name == "lm_head.weight" or (name.startswith("h.") and name.endswith((".attn.bias", ".attn.masked_bias"))):
                continue
            self.w[name] = t.to(dtype)
        self.dtype = dtype

    def target_shape(self, layer, target):
        return tuple(self.w[f"h.{layer}.{target}.weight"].shape)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) * torch.rsqrt(var + eps) * g + b


def logits(base, tokens, lora=None, scale=0.0):
    """Logits [B, T, vocab] for tokens [B, T] (positions 0..T-1 in every row; rows are padded at
    the end, which the causal mask keeps from any real position). lora maps "h.N.<target>.lora_A"
    and "..lora_B" to tensors (any float dtype: they are cast to the compute dtype here, so that
    float64 master copies get float32 gradients, as in the Go trainer)."""
    c, w = base.config, base.w
    d, nh, eps = c["n_embd"], c["n_head"], c["layer_norm_epsilon"]
    hd = d // nh
    B, T = tokens.shape
    if T > c["n_positions"]:
        raise ValueError(f"sequence of {T} tokens is longer than n_positions {c['n_positions']}")

    def conv1d(x, name):
        y = x @ w[name + ".weight"] + w[name + ".bias"]
        if lora is not None and name + ".lora_A" in lora:
            a = lora[name + ".lora_A"].to(base.dtype)
            b = lora[name + ".lora_B"].to(base.dtype)
            y = y + scale * ((x @ a) @ b)
        return y

    x = w["wte.weight"][tokens] + w["wpe.weight"][:T]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(c["n_layer"]):
        p = f"h.{i}."
        a = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        q, k, v = conv1d(a, p + "attn.c_attn").split(d, dim=-1)
        q, k, v = (t.view(B, T, nh, hd).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = torch.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, d)
        x = x + conv1d(y, p + "attn.c_proj")
        m = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        x = x + conv1d(gelu_new(conv1d(m, p + "mlp.c_fc")), p + "mlp.c_proj")
    x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
    return x @ w["wte.weight"].T


def sequence_logps(base, prompts, responses, lora=None, scale=0.0):
    """Per sequence, the sum of log p(response token | prefix) over the response tokens (as
    model.PairBatch masks them: positions >= len(prompt), never position 0), as a float64 tensor
    that carries the graph, and the response token counts."""
    seqs = [list(p) + list(r) for p, r in zip(prompts, responses)]
    T = max(len(s) for s in seqs)
    tokens = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.bool)
    for i, (s, p) in enumerate(zip(seqs, prompts)):
        tokens[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, max(len(p), 1):len(s)] = True
    lp = torch.log_softmax(logits(base, tokens, lora, scale), dim=-1)
    # Token t is predicted by the logits at t-1.
    tok_lp = lp[:, :-1].gather(2, tokens[:, 1:].unsqueeze(2)).squeeze(2)
    m = mask[:, 1:]
    sums = (tok_lp * m).sum(dim=1).to(torch.float64)
    return sums, m.sum(dim=1).tolist()
