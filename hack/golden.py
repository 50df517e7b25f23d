#!/usr/bin/python3
"""Golden vectors for trainer/model and trainer/loss from an independent implementation.

A from-scratch GPT-2 in PyTorch (float64, no Hugging Face code) with a tiny random config
and a LoRA adapter, written as Hugging Face style files plus golden.json:

  trainer/model/testdata/golden/model.safetensors    base weights (F32, HF GPT-2 names)
  trainer/model/testdata/golden/config.json          GPT-2 config (gelu_new)
  trainer/model/testdata/golden/adapter.safetensors  LoRA A/B (F32), metadata rank/alpha
  trainer/model/testdata/golden/golden.json          pairs, log-probs, losses, gradients, logits

and, for the float32 engine, the same computations done by PyTorch entirely in float32:

  trainer/model/testdata/golden/golden_f32.json      the model and pairs above, in float32
  trainer/model/testdata/golden32/                   a larger model (CONFIG32) for float32 only:
                                                     model/adapter/config as above, golden.json

The float32 goldens are made after everything else, from their own generator, so that the
float64 files do not change when they are added.

Every random number is rounded to float32 before use, so the F32 files hold exactly the
values the float64 computation used. Run with Debian's interpreter (python3-torch):

  /usr/bin/python3 hack/golden.py [--out trainer/model/testdata/golden] [--seed 1234]
                                  [--out32 trainer/model/testdata/golden32] [--seed32 4321]

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

# The larger model of the float32 goldens (golden32/): big enough that float32 rounding shows in
# the log-prob sums and gradients, small enough that the files stay < 400 KB.
CONFIG32 = dict(CONFIG, n_positions=64, n_ctx=64, n_embd=40, n_head=4)
SCALE32 = math.sqrt(16 / 40)  # projection stds scaled so activations match the small model's
# golden32 pairs: (prompt, chosen, rejected) lengths, True = the response ends with 256. Tokens
# are printable ASCII (32..126) so that bpo score can read the pairs as text.
PAIRS32 = [
    (12, (30, False), (41, False)), (20, (36, True), (25, False)), (8, (44, False), (33, True)),
    (24, (28, False), (36, False)), (15, (40, True), (40, False)), (10, (38, False), (45, False)),
    (18, (26, True), (40, True)), (22, (37, False), (19, False)),
]


def f32(t):
    """Round to float32 and back, so the F32 files are exact."""
    return t.to(torch.float32).to(torch.float64)


def make_weights(gen, cfg=CONFIG, scale=1.0):
    """Random base weights; scale multiplies the projection stds (1.0 for the small model)."""
    c = cfg
    d, v, n = c["n_embd"], c["vocab_size"], c["n_positions"]

    def normal(*shape, std):
        return f32(torch.randn(*shape, generator=gen) * std)

    w = {"wte.weight": normal(v, d, std=0.3), "wpe.weight": normal(n, d, std=0.1)}
    for i in range(c["n_layer"]):
        p = f"h.{i}."
        w[p + "ln_1.weight"] = f32(1 + 0.1 * torch.randn(d, generator=gen))
        w[p + "ln_1.bias"] = normal(d, std=0.1)
        w[p + "attn.c_attn.weight"] = normal(d, 3 * d, std=0.25 * scale)
        w[p + "attn.c_attn.bias"] = normal(3 * d, std=0.05)
        w[p + "attn.c_proj.weight"] = normal(d, d, std=0.25 * scale)
        w[p + "attn.c_proj.bias"] = normal(d, std=0.05)
        w[p + "ln_2.weight"] = f32(1 + 0.1 * torch.randn(d, generator=gen))
        w[p + "ln_2.bias"] = normal(d, std=0.1)
        w[p + "mlp.c_fc.weight"] = normal(d, 4 * d, std=0.25 * scale)
        w[p + "mlp.c_fc.bias"] = normal(4 * d, std=0.05)
        w[p + "mlp.c_proj.weight"] = normal(4 * d, d, std=0.15 * scale)
        w[p + "mlp.c_proj.bias"] = normal(d, std=0.05)
    w["ln_f.weight"] = f32(1 + 0.1 * torch.randn(d, generator=gen))
    w["ln_f.bias"] = normal(d, std=0.1)
    return w


def make_adapter(gen, weights, cfg=CONFIG):
    a = {}
    for i in range(cfg["n_layer"]):
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


def forward(w, ids, lora=None, cfg=CONFIG):
    """Logits [T, vocab] for a 1-D LongTensor of ids. lora: dict of A/B tensors or None.
    Computes in the dtype of w (and lora): float64 for golden.json, float32 for the float32 goldens."""
    c = cfg
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


def seq_logp(w, prompt, resp, lora=None, cfg=CONFIG):
    """(sum, mean) of log p(resp_t | prompt, resp_<t)."""
    ids = torch.tensor(prompt + resp, dtype=torch.long)
    logits = forward(w, ids[:-1], lora, cfg)
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


def reference(w, lora, pairs, cfg, beta, dtype):
    """The same model computed entirely in dtype (weights cast; they are float32-exact): per-pair
    policy (base + adapter) and reference (base) response log-prob sums and means, the DPO loss
    on sums and its gradient with respect to every adapter tensor."""
    wd = {k: v.to(dtype) for k, v in w.items()}
    params = {k: v.to(dtype).requires_grad_(True) for k, v in lora.items()}

    def logps(lo):
        out = {}
        for side in ("chosen", "rejected"):
            sm = [seq_logp(wd, p["prompt"], p[side], lo, cfg) for p in pairs]
            out[side + "_sum"] = torch.stack([s for s, _ in sm])
            out[side + "_mean"] = torch.stack([m for _, m in sm])
        return out

    pol = logps(params)
    with torch.no_grad():
        ref = logps(None)
    loss = losses(pol["chosen_sum"], pol["rejected_sum"], ref["chosen_sum"], ref["rejected_sum"], beta)["dpo"]
    names = sorted(params)
    g = torch.autograd.grad(loss, [params[n] for n in names])
    for t in list(pol.values()) + list(ref.values()) + [loss] + list(g):
        assert t.dtype == dtype, t.dtype
    lp = {}
    for k in ("chosen_sum", "rejected_sum", "chosen_mean", "rejected_mean"):
        lp["policy_" + k] = pol[k].detach()
        lp["ref_" + k] = ref[k]
    return lp, loss.detach(), dict(zip(names, g))


def f32_short(t):
    """A float32 tensor as a flat list of the shortest decimals that read back (as float32) to
    the same float32 values: about half the size of the exact float64 expansions."""
    return [float(str(x)) for x in t.detach().to(torch.float32).contiguous().view(-1).numpy()]


def reference_json(lp, loss, grads):
    """logps (exact: float32 values as float64), losses.dpo (exact), grads.dpo (per tensor)."""
    return {
        "logps": {k: v.tolist() for k, v in lp.items()},
        "losses": {"dpo": loss.item()},
        "grads": {"dpo": {n: {"shape": list(g.shape), "data": f32_short(g)} for n, g in grads.items()}},
    }


def check_f32(lp32, loss32, lp64, loss64):
    """The float32 numbers really are float32 (differ from float64) and close to float64."""
    d = max(((lp32[k].to(torch.float64) - lp64[k]).abs() / lp64[k].abs()).max().item() for k in lp64)
    dl = abs(loss32.item() - loss64.item()) / abs(loss64.item())
    assert 0 < d < 1e-4 and dl < 1e-4, (d, dl)
    return d, dl


def dump_json(path, obj, depth=3):
    """JSON with dicts (and lists of dicts) expanded for depth levels, everything deeper on one line."""
    def enc(v, level):
        pad = " " * level
        if level < depth and isinstance(v, dict):
            items = [f'{pad} {json.dumps(k)}: {enc(x, level + 1)}' for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if level < depth and isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            return "[\n" + ",\n".join(pad + " " + enc(x, depth) for x in v) + "\n" + pad + "]"
        return json.dumps(v, separators=(",", ":"))
    with open(path, "w") as f:
        f.write(enc(obj, 0) + "\n")


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
    ap.add_argument("--out32", default=os.path.join(root, "trainer", "model", "testdata", "golden32"),
                    help="folder of the larger float32-only golden model")
    ap.add_argument("--seed32", type=int, default=4321)
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

    # Float32 goldens, made last and without the generator above so that the float64 files stay
    # byte-identical. golden_f32.json: the small model and pairs, computed entirely in float32.
    lp32, loss32, g32 = reference(w, lora, pairs, CONFIG, BETA, torch.float32)
    lp64, loss64, _ = reference(w, lora, pairs, CONFIG, BETA, torch.float64)
    assert all(torch.equal(lp64[k], torch.stack([torch.as_tensor(x) for x in golden["logps"][k]])) for k in lp64)
    assert loss64.item() == golden["losses"]["dpo"]
    d_small = check_f32(lp32, loss32, lp64, loss64)
    dump_json(os.path.join(args.out, "golden_f32.json"), dict(
        {"dtype": "float32", "beta": BETA}, **reference_json(lp32, loss32, g32)))

    # golden32/: a larger model (CONFIG32) for float32 only, with its own generator.
    gen32 = torch.Generator().manual_seed(args.seed32)
    w32 = make_weights(gen32, CONFIG32, SCALE32)
    lora32 = make_adapter(gen32, w32, CONFIG32)

    def text_ids(n, eot):
        return torch.randint(32, 127, (n,), generator=gen32).tolist() + ([256] if eot else [])

    pairs32 = [{"prompt": text_ids(np, False), "chosen": text_ids(*c), "rejected": text_ids(*r)}
               for np, c, r in PAIRS32]
    for p in pairs32:
        assert len(p["prompt"]) + max(len(p["chosen"]), len(p["rejected"])) <= CONFIG32["n_positions"]
    lp32, loss32, g32 = reference(w32, lora32, pairs32, CONFIG32, BETA, torch.float32)
    lp64, loss64, _ = reference(w32, lora32, pairs32, CONFIG32, BETA, torch.float64)
    d_large = check_f32(lp32, loss32, lp64, loss64)
    cfg32 = {k: v for k, v in CONFIG32.items() if v is not None}
    os.makedirs(args.out32, exist_ok=True)
    write_safetensors(os.path.join(args.out32, "model.safetensors"), w32, {"format": "pt"})
    write_safetensors(os.path.join(args.out32, "adapter.safetensors"), lora32, {"rank": str(RANK), "alpha": str(ALPHA)})
    with open(os.path.join(args.out32, "config.json"), "w") as f:
        json.dump(cfg32, f, indent=2)
        f.write("\n")
    g32json = {"dtype": "float32", "config": cfg32, "lora": {"rank": RANK, "alpha": ALPHA}, "beta": BETA, "pairs": pairs32}
    g32json.update(reference_json(lp32, loss32, g32))
    g32json["logps_f64"] = {k: v.tolist() for k, v in lp64.items()}
    g32json["losses_f64"] = {"dpo": loss64.item()}
    dump_json(os.path.join(args.out32, "golden.json"), g32json)
    rw, _ = read_safetensors(os.path.join(args.out32, "model.safetensors"))
    ra, _ = read_safetensors(os.path.join(args.out32, "adapter.safetensors"))
    assert all(torch.equal(rw[k], w32[k]) for k in w32) and all(torch.equal(ra[k], lora32[k]) for k in lora32)

    print(json.dumps({"out": args.out, "losses": golden["losses"], "merge_max_abs_diff": diff,
                      "out32": args.out32, "loss32": loss32.item(),
                      "torch_f32_vs_f64_rel": {"small": {"logps": d_small[0], "dpo": d_small[1]},
                                               "large": {"logps": d_large[0], "dpo": d_large[1]}}}, indent=1))


if __name__ == "__main__":
    main()
