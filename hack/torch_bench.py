#!/usr/bin/python3
"""PyTorch float32 CPU baseline for `bpo bench` (hack/bench.sh, `make bench`).

Prints one JSON line per run with the fields of `bpo bench --json` (what, tokens, tokens_per_s
[median step], tokens_per_s_best [fastest step], step_ms, step_ms_best, steps, gflops,
gflops_best, threads, precision, backend, core, config{width, layers, heads, context, vocab,
batch, rank}) plus torch-specific ones (attention, torch, library, coretype_rule).

  --what train   one optimizer step of one LoRA ensemble member, the step the Go train stage runs:
                 --batch sequences (batch/2 preference pairs, chosen rows then rejected rows), each
                 --context tokens, the first half prompt and the second half response; GPT-2
                 (gelu_new, tied output embedding, logits at every position as the Go graph and
                 Hugging Face's GPT2LMHeadModel compute them) with frozen base weights and LoRA
                 (--rank, --alpha) on attn.c_attn, attn.c_proj, mlp.c_fc and mlp.c_proj of every
                 layer; summed response log-probs; DPO (beta 0.1) against the base model's
                 log-probs; backward; clip_grad_norm_ 1.0; AdamW. tokens = batch*context per step.
  --what sample  a float32 KV-cache decoding loop on the same (LoRA-free) model under
                 inference_mode: --batch rows, prompts of context/2 random tokens, context/2 new
                 tokens per row drawn by torch.multinomial at temperature 1 (no end-of-text stop;
                 the last token is drawn but not fed back, as in Go's sampler), keys and values
                 in preallocated [layers, batch, heads, context, head] tensors. One step = prefill
                 + generation; tokens = generated tokens.
  --what peak    SGEMM GFLOP/s at 1024 and 2048, best call of each (as Go's blas.Peak);
                 gflops = the better size.

"PyTorch at its best": eager float32; torch's matmuls go to the system BLAS (Debian: OpenBLAS);
the attention form is the faster, measured before timing, of scaled_dot_product_attention (absent
in torch 1.13) and two manual softmax forms (masked_fill and baddbmm with an additive mask);
OPENBLAS_CORETYPE is set before torch is imported unless the caller set it (see
openblas_coretype); hack/bench.sh runs 1 and 2 threads and keeps the faster.

FLOPs use the same "model FLOPs" convention as bpo bench (cmd/bpo/bench.go), N = 12*L*d^2 + V*d:
train 6*N + 12*L*T*d per token; sampling 2*N + 4*L*d*t per generated token, t the positions
attended to.

Use /usr/bin/python3 (Debian's python3-torch), not a pyenv python:
  /usr/bin/python3 hack/torch_bench.py --what train --width 128 --layers 4 --context 128 --threads 1
"""
import argparse
import os


def parse_args():
    ap = argparse.ArgumentParser(description="PyTorch float32 CPU baseline for bpo bench")
    ap.add_argument("--what", choices=["train", "sample", "peak"], default="train")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=0, help="0: width/32 (head size 32), as bpo bench")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=16, help="sequences per step (train: batch/2 pairs)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--threads", type=int, default=0, help="0: torch's default")
    ap.add_argument("--seconds", type=float, default=10, help="time budget per measurement after warm-up")
    ap.add_argument("--attention", choices=["auto", "sdpa", "masked_fill", "baddbmm"], default="auto")
    ap.add_argument("--seed", type=int, default=1)
    return ap.parse_args()


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def openblas_coretype(flags):
    """The OPENBLAS_CORETYPE to force, or None to leave OpenBLAS's own pick.

    AVX-512 (F, BW, DQ, VL) -> SkylakeX; AVX2+FMA -> Haswell; else OpenBLAS's own pick. On AMD Zen,
    Debian's OpenBLAS 0.3.21 picks "Zen" by itself (OPENBLAS_VERBOSE=2), whose SGEMM kernel is
    Haswell's with other blocking. Measured on the 2-core AMD EPYC (Zen 3) VM this was written on,
    through torch.mm, 1 thread, GFLOP per CPU-second (the VM is shared: wall-clock rates were too
    noisy), mean of 5 interleaved process pairs, Zen vs forced Haswell: 1024^3 87.0 vs 89.5,
    2048^3 87.6 vs 88.1, and the train step's shapes 4096x768x256 82.2 vs 86.8, 4096x256x1024
    81.5 vs 83.0, 4096x4096x256 86.4 vs 87.8. Forcing Haswell is as fast or slightly faster, so
    the rule forces it on every AVX2 machine (which also protects CPUs 0.3.21 does not know: it
    falls back to pre-AVX2 kernels for them). trainer/blas applies the same rule for Go.
    """
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


ARGS = parse_args()
if os.environ.get("OPENBLAS_CORETYPE"):
    CORE_RULE = "caller"
else:
    _core = openblas_coretype(cpu_flags())
    CORE_RULE = "cpuinfo:" + (_core or "unset")
    if _core:
        os.environ["OPENBLAS_CORETYPE"] = _core
if ARGS.threads > 0:
    for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_v] = str(ARGS.threads)

import ctypes  # noqa: E402
import sys  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

if ARGS.threads > 0:
    torch.set_num_threads(ARGS.threads)

DT = torch.float32
TARGETS = {"attn.c_attn": 3, "attn.c_proj": 1, "mlp.c_fc": 4, "mlp.c_proj": 1}


# ---- the model ----

def build(cfg, gen, lora=True):
    """GPT-2 weights as model.Init draws them (N(0, 0.02^2), residual projections scaled by
    1/sqrt(2L)) and PEFT-style LoRA (A ~ N(0, 1/in), B = 0)."""
    d, v, T, L, r = cfg["width"], cfg["vocab"], cfg["context"], cfg["layers"], cfg["rank"]

    def rnd(*s, std=0.02):
        return torch.randn(*s, generator=gen, dtype=DT) * std

    w = {"wte": rnd(v, d), "wpe": rnd(T, d), "ln_f.g": torch.ones(d), "ln_f.b": torch.zeros(d)}
    ad = {}
    shapes = {"attn.c_attn": (d, 3 * d), "attn.c_proj": (d, d), "mlp.c_fc": (d, 4 * d), "mlp.c_proj": (4 * d, d)}
    for i in range(L):
        p = f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            w[p + ln + ".g"], w[p + ln + ".b"] = torch.ones(d), torch.zeros(d)
        for t, (a, b) in shapes.items():
            std = 0.02 / math.sqrt(2 * L) if t.endswith("c_proj") else 0.02
            w[p + t + ".w"], w[p + t + ".b"] = rnd(a, b, std=std), torch.zeros(b)
            if lora:
                ad[p + t + ".A"] = rnd(a, r, std=1 / math.sqrt(a)).requires_grad_(True)
                ad[p + t + ".B"] = torch.zeros(r, b, dtype=DT, requires_grad=True)
    return w, ad


def make_attention(form, T):
    """attn(q, k, v, causal) on [B, nh, n, hd] q and [B, nh, m, hd] k, v (m >= n; the n queries are
    the last n positions of the m)."""
    if form == "sdpa":
        def attn(q, k, v, causal):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal and q.shape[2] > 1)
        return attn
    full = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    bias = torch.zeros(T, T, dtype=DT).masked_fill(full, float("-inf"))

    if form == "masked_fill":
        def attn(q, k, v, causal):
            n, m = q.shape[2], k.shape[2]
            s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
            if causal and n > 1:
                s = s.masked_fill(full[m - n:m, :m], float("-inf"))
            return torch.softmax(s, dim=-1) @ v
        return attn

    def attn(q, k, v, causal):  # baddbmm: scale and additive mask fused in one BLAS-backed call
        B, nh, n, hd = q.shape
        m = k.shape[2]
        q3, k3 = q.reshape(B * nh, n, hd), k.reshape(B * nh, m, hd)
        if causal and n > 1:
            s = torch.baddbmm(bias[m - n:m, :m].expand(B * nh, n, m), q3, k3.transpose(1, 2), alpha=1.0 / math.sqrt(hd))
        else:
            s = torch.bmm(q3, k3.transpose(1, 2)).mul_(1.0 / math.sqrt(hd))
        return torch.bmm(torch.softmax(s, dim=-1), v.reshape(B * nh, m, hd)).view(B, nh, n, hd)
    return attn


def linear(x, w, ad, name, scale):
    """x [N, in] -> x W + b (+ scale * (x A) B with LoRA)."""
    y = torch.addmm(w[name + ".b"], x, w[name + ".w"])
    if ad:
        y = torch.addmm(y, x @ ad[name + ".A"], ad[name + ".B"], alpha=scale)
    return y


def block(w, ad, cfg, i, x, B, n, attn, scale, kv=None, past=0):
    """One decoder layer on x [B*n, d]; kv = (K, V) caches [B, nh, T, hd] to write positions
    past..past+n-1 into and attend over (None: attend within x)."""
    d, nh = cfg["width"], cfg["heads"]
    hd = d // nh
    p = f"h.{i}."
    a = F.layer_norm(x, (d,), w[p + "ln_1.g"], w[p + "ln_1.b"], 1e-5)
    q, k, v = linear(a, w, ad, p + "attn.c_attn", scale).view(B, n, 3, nh, hd).permute(2, 0, 3, 1, 4)
    if kv is not None:
        K, V = kv
        K[:, :, past:past + n] = k
        V[:, :, past:past + n] = v
        k, v = K[:, :, :past + n], V[:, :, :past + n]
    y = attn(q, k, v, True).transpose(1, 2).reshape(B * n, d)
    x = x + linear(y, w, ad, p + "attn.c_proj", scale)
    m = F.layer_norm(x, (d,), w[p + "ln_2.g"], w[p + "ln_2.b"], 1e-5)
    h = F.gelu(linear(m, w, ad, p + "mlp.c_fc", scale), approximate="tanh")  # gelu_new
    return x + linear(h, w, ad, p + "mlp.c_proj", scale)


def hidden(w, ad, cfg, ids, attn):
    B, T = ids.shape
    scale = cfg["alpha"] / cfg["rank"]
    x = (w["wte"][ids] + w["wpe"][:T]).view(B * T, -1)
    for i in range(cfg["layers"]):
        x = block(w, ad, cfg, i, x, B, T, attn, scale)
    return F.layer_norm(x, (cfg["width"],), w["ln_f.g"], w["ln_f.b"], 1e-5)


def seq_logprobs(w, ad, cfg, ids, resp, attn):
    """Summed log-probs of the masked (response) tokens, per sequence."""
    B, T = ids.shape
    logits = (hidden(w, ad, cfg, ids, attn) @ w["wte"].T).view(B, T, -1)[:, :-1]
    logp = torch.log_softmax(logits, dim=-1).gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)
    return (logp * resp).sum(1)


# ---- measurements ----

def timed(step, seconds, warmup=1, min_steps=3):
    for _ in range(warmup):
        step()
    times, start = [], time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def rates(times, tokens, flops):
    s = sorted(times)
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"tokens_per_s": tokens / med, "tokens_per_s_best": tokens / s[0],
            "step_ms": med * 1e3, "step_ms_best": s[0] * 1e3, "steps": n,
            "gflops": flops / med / 1e9, "gflops_best": flops / s[0] / 1e9}


def n_params(cfg):
    return 12 * cfg["layers"] * cfg["width"] ** 2 + cfg["vocab"] * cfg["width"]


def train_flops(cfg):
    tokens = cfg["batch"] * cfg["context"]
    return 6 * n_params(cfg) * tokens + 12 * cfg["layers"] * cfg["context"] * cfg["width"] * tokens


def sample_flops(cfg, prompt, gen):
    attended = gen * prompt + gen * (gen - 1) / 2
    return cfg["batch"] * (2 * n_params(cfg) * gen + 4 * cfg["layers"] * cfg["width"] * attended)


def attention_forms():
    forms = ["masked_fill", "baddbmm"]
    if hasattr(F, "scaled_dot_product_attention"):
        forms.insert(0, "sdpa")
    return forms


def pick(make_step, forms, log):
    """The attention form whose step is fastest (best of 2 after a warm-up)."""
    if len(forms) == 1:
        return forms[0], make_step(forms[0])
    best = None
    for f in forms:
        step = make_step(f)
        t = min(timed(step, 0, warmup=1, min_steps=2))
        log(f"attention {f}: {t * 1e3:.1f} ms")
        if best is None or t < best[1]:
            best = (f, t, step)
    return best[0], best[2]


def bench_train(cfg, seconds, forms, log):
    gen = torch.Generator().manual_seed(ARGS.seed)
    w, ad = build(cfg, gen)
    P, T, V = cfg["batch"] // 2, cfg["context"], cfg["vocab"]
    beta = 0.1
    prompt = torch.randint(0, V, (P, T // 2), generator=gen)
    ids = torch.cat([torch.cat([prompt, torch.randint(0, V, (P, T - T // 2), generator=gen)], 1) for _ in range(2)])
    resp = torch.zeros(2 * P, T - 1, dtype=DT)
    resp[:, T // 2 - 1:] = 1  # targets ids[:, 1:]: the response is the second half
    params = list(ad.values())

    def make_step(form):
        attn = make_attention(form, T)
        with torch.no_grad():
            ref = seq_logprobs(w, None, cfg, ids, resp, attn)  # the base model as the reference
        opt = torch.optim.AdamW(params, lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

        def step():
            seq = seq_logprobs(w, ad, cfg, ids, resp, attn)
            h = (seq[:P] - ref[:P]) - (seq[P:] - ref[P:])
            loss = F.softplus(-beta * h).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        return step

    form, step = pick(make_step, forms, log)
    out = rates(timed(step, seconds), cfg["batch"] * T, train_flops(cfg))
    out["attention"] = form
    return out


def bench_sample(cfg, seconds, forms, log):
    gen = torch.Generator().manual_seed(ARGS.seed)
    w, _ = build(cfg, gen, lora=False)
    B, T, V, L, d, nh = cfg["batch"], cfg["context"], cfg["vocab"], cfg["layers"], cfg["width"], cfg["heads"]
    P, G = T // 2, T - T // 2
    prompts = torch.randint(0, V, (B, P), generator=gen)
    K = torch.empty(L, B, nh, T, d // nh, dtype=DT)
    Vc = torch.empty_like(K)
    out = torch.empty(B, G, dtype=torch.long)
    lnf = lambda x: F.layer_norm(x, (d,), w["ln_f.g"], w["ln_f.b"], 1e-5)  # noqa: E731

    def forward(ids, past, attn):
        """Next-token logits [B, V] after ids [B, n] at positions past..past+n-1."""
        n = ids.shape[1]
        x = (w["wte"][ids] + w["wpe"][past:past + n]).view(B * n, d)
        for i in range(L):
            x = block(w, None, cfg, i, x, B, n, attn, 0.0, kv=(K[i], Vc[i]), past=past)
        x = x.view(B, n, d)[:, -1]
        return lnf(x) @ w["wte"].T

    def make_step(form):
        attn = make_attention(form, T)

        @torch.inference_mode()
        def step():
            logits = forward(prompts, 0, attn)
            for i in range(G):
                tok = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)  # temperature 1
                out[:, i] = tok[:, 0]
                if i == G - 1:
                    break  # the last token fills the context: drawn, not fed back
                logits = forward(tok, P + i, attn)
        return step

    form, step = pick(make_step, forms, log)
    res = rates(timed(step, seconds), B * G, sample_flops(cfg, P, G))
    res["attention"] = form
    return res


def gemm_gflops(n, seconds):
    """SGEMM C = A B on n x n: the best call's rate (as Go's blas.Peak) after a warm-up call."""
    a, b = torch.randn(n, n, dtype=DT), torch.randn(n, n, dtype=DT)
    c = a @ b
    best, reps, start = float("inf"), 0, time.perf_counter()
    while reps < 2 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return 2 * n ** 3 / best / 1e9


def openblas():
    """(library path, corename, config string) of the OpenBLAS loaded in this process."""
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({l.split()[-1] for l in f if "blas" in l.split()[-1]})
    except OSError:
        libs = []
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            return path, lib.openblas_get_corename().decode(), lib.openblas_get_config().decode()
        except (OSError, AttributeError):
            continue
    return (libs[0] if libs else ""), "", ""


def main():
    a = ARGS
    cfg = {"width": a.width, "layers": a.layers, "heads": a.heads or max(1, a.width // 32), "context": a.context,
           "vocab": a.vocab, "batch": a.batch, "rank": a.rank}
    assert cfg["width"] % cfg["heads"] == 0, "width must be a multiple of heads"
    assert a.batch >= 2 and a.batch % 2 == 0, "batch must be even"
    cfg_alpha = dict(cfg, alpha=a.alpha)

    def log(msg):
        print(f"torch_bench: {a.what}: {msg}", file=sys.stderr, flush=True)

    forms = attention_forms() if a.attention == "auto" else [a.attention]
    torch.manual_seed(a.seed)
    out = {"what": a.what}
    if a.what == "train":
        out["tokens"] = "trained"
        out.update(bench_train(cfg_alpha, a.seconds, forms, log))
    elif a.what == "sample":
        out["tokens"] = "generated"
        out.update(bench_sample(cfg_alpha, a.seconds, forms, log))
    else:
        sizes = {str(n): gemm_gflops(n, max(a.seconds, 0.02) / 2) for n in (1024, 2048)}
        out["gflops"] = max(sizes.values())
        out["sizes"] = sizes
    path, core, conf = openblas()
    out.update({"threads": torch.get_num_threads(), "precision": "float32",
                "backend": "openblas" if core else (os.path.basename(path) or "torch"), "core": core,
                "coretype_rule": CORE_RULE, "library": conf or path, "torch": torch.__version__})
    if a.what != "peak":
        out["config"] = cfg
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
