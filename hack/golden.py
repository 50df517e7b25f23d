#!/usr/bin/python3
"""Golden vectors for trainer/model and trainer/loss from an independent implementation.

A from-scratch GPT-2 in PyTorch (float64, no Hugging Face code) with a tiny random config
and a LoRA adapter, written as Hugging Face style files plus golden.json:

  trainer/model/testdata/golden/model.safetensors    base weights (F32, HF GPT-2 names)
  trainer/model/testdata/golden/config.json          GPT-2 config (gelu_new)
  trainer/model/testdata/golden/adapter.safetensors  LoRA A/B (F32), metadata rank/alpha
  trainer/model/testdata/golden/golden.json          pairs, log-probs, losses, gradients, logits

Every random number is rounded to float32 before use, so the F32 files hold exactly the
values the float64 computation used. Run with Debian's interpreter (python3-torch):

  /usr/bin/python3 hack/golden.py [--out trainer/model/testdata/golden] [--seed 1234]

Conventions (docs/design.md): Conv1D weights are [in, out] (y = x W + b); LoRA
W_eff = W + (alpha/r) A B with A [in, r], B [r, out]; the LM head is tied to wte;
sequence log-prob = sum over response tokens of log p(token | prefix); policy = base +
adapter, reference = base; losses are batch means; IPO uses per-token mean log-probs
("ipo") or sums ("ipo_sum"); DPO and SLiC use sums.
"""
import argparse
import json
import math
import os
import struct

import torch

torch.set_default_dtype(torch.float64)

CONFIG = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "vocab_size": 257,
    "n_positions": 32,
    "n_ctx": 32,
    "n_embd": 16,
    "n_layer": 2,
    "n_head": 2,
    "n_inner": None,
    "layer_norm_epsilon": 1e-5,
    "activation_function": "gelu_new",
    "bos_token_id": 256,
    "eos_token_id": 256,
}
RANK, ALPHA = 4, 8
BETA = 0.1
TARGETS = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]


def f32(t):
    """Round to float32 and back, so the F32 files are exact."""
    return t.to(torch.float32).to(torch.float64)


def make_weights(gen):
    c = CONFIG
    d, v, n = c["n_embd"], c["vocab_size"], c["n_positions"]

    def normal(*shape, std):
        return f32(torch.randn(*shape, generator=gen) * std)

    w = {"wte.weight": normal(v, d, std=0.3), "wpe.weight": normal(n, d, std=0.1)}
    for i in range(c["n_layer"]):
        p = f"h.{i}."
        w[p + "ln_1.weight"] = f32(1 + 0.1 * torch.randn(d, generator=gen))
        w[p + "ln_1.bias"] = normal(d, std=0.1)
        w[p + "attn.c_attn.weight"] = normal(d, 3 * d, std=0.25)
        w[p + "attn.c_attn.bias"] = normal(3 * d, std=0.05)
        w[p + "attn.c_proj.weight"] = normal(d, d, std=0.25)
        w[p + "attn.c_proj.bias"] = normal(d, std=0.05)
        w[p + "ln_2.weight"] = f32(1 + 0.1 * torch.randn(d, generator=gen))
        w[p + "ln_2.bias"] = normal(d, std=0.1)
        w[p + "mlp.c_fc.weight"] = normal(d, 4 * d, std=0.25)
        w[p + "mlp.c_fc.bias"] = normal(4 * d, std=0.05)
        w[p + "mlp.c_proj.weight"] = normal(4 * d, d, std=0.15)
        w[p + "mlp.c_proj.bias"] = normal(d, std=0.05)
    w["ln_f.weight"] = f32(1 + 0.1 * torch.randn(d, generator=gen))
    w["ln_f.bias"] = normal(d, std=0.1)
    return w


def make_adapter(gen, weights):
    a = {}
    for i in range(CONFIG["n_layer"]):
        for t in TARGETS:
            din, dout = weights[f"h.{i}.{t}.weight"].shape
            # Both factors random and nonzero so that gradients reach A as well as B.
            a[f"h.{i}.{t}.lora_A"] = f32(torch.randn(din, RANK, generator=gen) * 0.2)
            a[f"h.{i}.{t}.lora_B"] = f32(torch.randn(RANK, dout, generator=gen) * 0.1)
    return a


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased, as torch/HF LayerNorm
    return (x - mu) / torch.sqrt(var + eps) * g + b


def forward(w, ids, lora=None):
    """Logits [T, vocab] for a 1-D LongTensor of ids. lora: dict of A/B tensors or None."""
    c = CONFIG
    d, nh, eps = c["n_embd"], c["n_head"], c["layer_norm_epsilon"]
    hd = d // nh
    scale = ALPHA / RANK
    T = ids.shape[0]

    def conv1d(x, name):
        y = x @ w[name + ".weight"] + w[name + ".bias"]
        if lora is not None and name + ".lora_A" in lora:
            y = y + scale * ((x @ lora[name + ".lora_A"]) @ lora[name + ".lora_B"])
        return y

    x = w["wte.weight"][ids] + w["wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(c["n_layer"]):
        p = f"h.{i}."
        a = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = conv1d(a, p + "attn.c_attn")
        q, k, v = qkv.split(d, dim=-1)
        q = q.view(T, nh, hd).transpose(0, 1)
        k = k.view(T, nh, hd).transpose(0, 1)
        v = v.view(T, nh, hd).transpose(0, 1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = att.masked_fill(~mask, float("-inf"))
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(0, 1).reshape(T, d)
        x = x + conv1d(y, p + "attn.c_proj")
        m = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        x = x + conv1d(gelu_new(conv1d(m, p + "mlp.c_fc")), p + "mlp.c_proj")
    x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
    return x @ w["wte.weight"].T


def seq_logp(w, prompt, resp, lora=None):
    """(sum, mean) of log p(resp_t | prompt, resp_<t)."""
    ids = torch.tensor(prompt + resp, dtype=torch.long)
    logits = forward(w, ids[:-1], lora)
    logp = torch.log_softmax(logits, dim=-1)
    start = len(prompt) - 1
    tok = ids[len(prompt):]
    lp = logp[start:start + len(resp)].gather(1, tok.unsqueeze(1)).squeeze(1)
    return lp.sum(), lp.mean()


def losses(pc, pr, rc, rr, beta):
    h = (pc - rc) - (pr - rr)
    return {
        "dpo": torch.nn.functional.softplus(-beta * h).mean(),
        "ipo": ((h - 1 / (2 * beta)) ** 2).mean(),
        "slic": torch.clamp(1 - beta * h, min=0).mean(),
    }


def write_safetensors(path, tensors, metadata=None):
    """Hand-written safetensors (F32, little-endian, names sorted)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].to(torch.float32).contiguous()
        b = struct.pack("<%df" % t.numel(), *t.flatten().tolist())
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        vals = struct.unpack("<%df" % ((e - s) // 4), data[s:e])
        out[name] = torch.tensor(vals).reshape(info["shape"])
    return out, header.get("__metadata__")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "trainer", "model", "testdata", "golden"))
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    w = make_weights(gen)
    lora = make_adapter(gen, w)

    # Three pairs of different lengths (byte ids; 256 = end-of-text ends one response).
    def rand_ids(n):
        return torch.randint(0, 256, (n,), generator=gen).tolist()

    pairs = [
        {"prompt": rand_ids(5), "chosen": rand_ids(4) + [256], "rejected": rand_ids(7)},
        {"prompt": rand_ids(3), "chosen": rand_ids(9), "rejected": rand_ids(2)},
        {"prompt": rand_ids(8), "chosen": rand_ids(1), "rejected": rand_ids(6) + [256]},
    ]
    for p in pairs:
        assert len(p["prompt"]) + max(len(p["chosen"]), len(p["rejected"])) <= CONFIG["n_positions"]

    params = {k: v.clone().requires_grad_(True) for k, v in lora.items()}

    def logps(lo):
        out = {k: [] for k in ("chosen_sum", "rejected_sum", "chosen_mean", "rejected_mean")}
        for p in pairs:
            cs, cm = seq_logp(w, p["prompt"], p["chosen"], lo)
            rs, rm = seq_logp(w, p["prompt"], p["rejected"], lo)
            out["chosen_sum"].append(cs)
            out["chosen_mean"].append(cm)
            out["rejected_sum"].append(rs)
            out["rejected_mean"].append(rm)
        return {k: torch.stack(v) for k, v in out.items()}

    pol = logps(params)
    with torch.no_grad():
        ref = logps(None)
    ls = losses(pol["chosen_sum"], pol["rejected_sum"], ref["chosen_sum"], ref["rejected_sum"], BETA)
    lm = losses(pol["chosen_mean"], pol["rejected_mean"], ref["chosen_mean"], ref["rejected_mean"], BETA)
    chosen_losses = {"dpo": ls["dpo"], "ipo": lm["ipo"], "slic": ls["slic"]}

    picks = [
        ("h.0.attn.c_attn.lora_A", [3, 1]), ("h.0.attn.c_attn.lora_B", [2, 40]),
        ("h.0.attn.c_proj.lora_B", [0, 5]), ("h.0.mlp.c_fc.lora_A", [7, 2]),
        ("h.0.mlp.c_proj.lora_A", [50, 3]), ("h.1.attn.c_attn.lora_B", [1, 10]),
        ("h.1.attn.c_proj.lora_A", [12, 0]), ("h.1.mlp.c_fc.lora_B", [3, 63]),
        ("h.1.mlp.c_proj.lora_B", [2, 15]), ("h.1.mlp.c_fc.lora_A", [0, 3]),
    ]
    grads = {}
    for kind, loss in chosen_losses.items():
        g = torch.autograd.grad(loss, [params[n] for n, _ in picks], retain_graph=True)
        grads[kind] = [{"name": n, "index": idx, "value": gi[idx[0], idx[1]].item()}
                       for (n, idx), gi in zip(picks, g)]
        assert all(e["value"] != 0 for e in grads[kind]), kind

    with torch.no_grad():
        p0 = pairs[0]
        last = forward(w, torch.tensor(p0["prompt"] + p0["chosen"], dtype=torch.long))[-1]

    lst = lambda t: [x for x in t.detach().tolist()]
    golden = {
        "config": {k: v for k, v in CONFIG.items() if v is not None},
        "lora": {"rank": RANK, "alpha": ALPHA},
        "beta": BETA,
        "pairs": pairs,
        "logps": {
            "policy_chosen_sum": lst(pol["chosen_sum"]), "policy_rejected_sum": lst(pol["rejected_sum"]),
            "policy_chosen_mean": lst(pol["chosen_mean"]), "policy_rejected_mean": lst(pol["rejected_mean"]),
            "ref_chosen_sum": lst(ref["chosen_sum"]), "ref_rejected_sum": lst(ref["rejected_sum"]),
            "ref_chosen_mean": lst(ref["chosen_mean"]), "ref_rejected_mean": lst(ref["rejected_mean"]),
        },
        "losses": {"dpo": ls["dpo"].item(), "ipo": lm["ipo"].item(), "ipo_sum": ls["ipo"].item(),
                   "slic": ls["slic"].item()},
        "grads": grads,
        "last_logits": [lst(last)],
    }

    os.makedirs(args.out, exist_ok=True)
    write_safetensors(os.path.join(args.out, "model.safetensors"), w, {"format": "pt"})
    write_safetensors(os.path.join(args.out, "adapter.safetensors"), lora, {"rank": str(RANK), "alpha": str(ALPHA)})
    cfg = {k: v for k, v in CONFIG.items() if v is not None}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")

    # Self-checks: the files read back bit-exactly; the merged model equals base+adapter.
    rw, _ = read_safetensors(os.path.join(args.out, "model.safetensors"))
    ra, meta = read_safetensors(os.path.join(args.out, "adapter.safetensors"))
    assert meta == {"rank": "4", "alpha": "8"}, meta
    assert all(torch.equal(rw[k], w[k]) for k in w) and all(torch.equal(ra[k], lora[k]) for k in lora)
    merged = dict(w)
    for k in lora:
        if k.endswith(".lora_A"):
            base = k[: -len(".lora_A")]
            merged[base + ".weight"] = w[base + ".weight"] + (ALPHA / RANK) * lora[k] @ lora[base + ".lora_B"]
    ids = torch.tensor(p0["prompt"] + p0["chosen"], dtype=torch.long)
    with torch.no_grad():
        diff = (forward(merged, ids) - forward(w, ids, lora)).abs().max().item()
    assert diff < 1e-10, diff
    for kind in grads:  # one finite-difference check per loss on the first pick
        n, (i, j) = picks[0]
        eps = 1e-6
        def lossval(delta):
            lo = {k: v.detach().clone() for k, v in lora.items()}
            lo[n][i, j] += delta
            with torch.no_grad():
                pp = logps(lo)
            s = "mean" if kind == "ipo" else "sum"
            return losses(pp["chosen_" + s], pp["rejected_" + s], ref["chosen_" + s], ref["rejected_" + s], BETA)[kind].item()
        fd = (lossval(eps) - lossval(-eps)) / (2 * eps)
        an = grads[kind][0]["value"]
        assert abs(fd - an) <= 1e-6 * max(1e-8, abs(an)) + 1e-10, (kind, fd, an)
    print(json.dumps({"out": args.out, "losses": golden["losses"], "merge_max_abs_diff": diff}, indent=1))


if __name__ == "__main__":
    main()
