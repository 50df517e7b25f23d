"""The train stage of phase k for ensemble member m: what pipeline.Env.Train does, in PyTorch.

The member continues from its adapter and optimizer state after phase k-1 and takes
epochsPerPhase passes of ceil(pairs/F / pairsPerStep) steps over the phase's kept pairs (batches
wrap around when ties removed some), in the batch order every member shares, against the reference
log-probs the sample stage recorded in the pairs. The reference model itself is never loaded: the
pairs carry its log-probs, which is what makes the reference choice (behavior, initial, EMA,
fixed) invisible to this stage.
"""
import json
import os
import time

import torch

import adamw
import gorand
import gpt2
import losses
import safetensors_io
from workspace import read_json, write_json


def model_dir(spec, ws):
    """spec.model.path on the volume, or the built-in model the sample stage materialised."""
    if spec.model_path:
        return os.path.join(ws.volume, spec.model_path)
    d = os.path.join(ws.root, "base")
    if not os.path.exists(os.path.join(d, ".complete")):
        raise RuntimeError(f"spec.model.builtin {spec.model_builtin!r}: {d} is not complete; the sample stage "
                           "materialises the built-in model there: run it first")
    return d


def load_adapter(path, base, want_rank=None, want_alpha=None):
    """An adapter file (SaveAdapter's layout): {name: float64 tensor}, rank, alpha."""
    tensors, meta = safetensors_io.read(path)
    try:
        rank, alpha = int(meta["rank"]), float(meta["alpha"])
    except (KeyError, ValueError):
        raise RuntimeError(f"{path}: __metadata__ needs integer rank and numeric alpha, has {meta}")
    for i in range(base.config["n_layer"]):
        for t in gpt2.TARGETS:
            din, dout = base.target_shape(i, t)
            for suffix, shape in ((".lora_A", (din, rank)), (".lora_B", (rank, dout))):
                name = f"h.{i}.{t}{suffix}"
                if name not in tensors or tuple(tensors[name].shape) != shape:
                    raise RuntimeError(f"{path}: tensor {name} missing or not {list(shape)}")
    if want_rank is not None and (rank != want_rank or alpha != want_alpha):
        raise RuntimeError(f"spec.ensemble: the adapter {path} has rank {rank} and alpha {alpha:g}, the spec asks for "
                           f"rank {want_rank} and alpha {want_alpha}: set spec.ensemble.rank/alpha to match")
    return tensors, rank, alpha


def initial_adapter(spec, ws, base, mdir, m):
    """Member m's adapter before phase 1: the model folder's SFT adapter adapters/member-<m>.safetensors,
    or, for a model without adapters/, the block of the phase-1 behavior adapter that is member m's
    (the Go stage draws that adapter from Go's random numbers; the sample stage saved it, stacked, as
    phase-1/behavior-adapter, see model.EnsembleAdapter)."""
    path = os.path.join(mdir, "adapters", f"member-{m}.safetensors")
    if os.path.exists(path):
        return load_adapter(path, base, spec.rank, spec.alpha)[0]
    if os.path.isdir(os.path.join(mdir, "adapters")):
        raise RuntimeError(f"spec.ensemble.members is {spec.members} but {mdir} has no {os.path.basename(path)}")
    peft = os.path.join(ws.phase(1), "behavior-adapter", "adapter_model.safetensors")
    stacked, _ = safetensors_io.read(peft)
    r, out = spec.rank, {}
    for key, t in stacked.items():
        name = key.removeprefix("base_model.model.").removeprefix("transformer.").removesuffix(".weight")
        # PEFT keeps nn.Linear layouts: lora_A [R, in], lora_B [out, R]; ours are the transposes.
        t = t.T
        out[name] = t[:, m * r:(m + 1) * r].clone() if name.endswith("lora_A") else t[m * r:(m + 1) * r, :].clone()
    return out


def merged_policy(base, adapters, scale):
    """The mean of the members' deltas merged into the base (model.MergeMean), as a new Base."""
    merged = gpt2.Base.__new__(gpt2.Base)
    merged.config, merged.dtype = base.config, base.dtype
    merged.w = dict(base.w)
    if adapters:
        for name in base.w:
            prefix = name.removesuffix(".weight")
            if prefix + ".lora_A" not in adapters[0]:
                continue
            w = base.w[name].double()
            for a in adapters:
                w = w + (scale / len(adapters)) * (a[prefix + ".lora_A"] @ a[prefix + ".lora_B"])
            merged.w[name] = w.to(base.dtype)
    return merged


def length_balanced(margins, len_chosen, len_rejected):
    """pipeline.lengthBalancedAccuracy: the mean of the accuracy (margin > 0, ties 1/2) over the pairs
    whose chosen response is the longer and over those whose chosen response is the shorter, in
    tokens; None unless both kinds occur. Ranking by length alone scores 0.5 on it, as chance does."""
    right, n = [0.0, 0.0], [0, 0]  # [0]: chosen longer, [1]: chosen shorter
    for m, c, r in zip(margins, len_chosen, len_rejected):
        if c == r:
            continue
        g = 0 if c > r else 1
        n[g] += 1
        right[g] += 1.0 if m > 0 else 0.5 if m == 0 else 0.0
    if not n[0] or not n[1]:
        return None
    return (right[0] / n[0] + right[1] / n[1]) / 2


def pair_accuracy(spec, ws, base, mdir, j, k, log):
    """pipeline.Env.pairAccuracy: the implicit-reward accuracy r = log pi_j - log pi_init of the merged
    ensemble after phase j on phase k's pairs (ties count 1/2), kept in phase-<k>/diagnostics so that
    whichever stage measures it first writes it and the others read it."""
    path = ws.diagnostics_path(j, k)
    if os.path.exists(path):
        return read_json(path, "")
    pairs = ws.read_pairs(k)
    pa = {"policyPhase": j, "pairsPhase": k, "pairs": len(pairs)}
    if pairs:
        members = [load_adapter(os.path.join(ws.member_dir(j, m), "adapter.safetensors"), base)[0] for m in range(spec.members)]
        initial = [initial_adapter(spec, ws, base, mdir, m) for m in range(spec.members)]
        scale = spec.alpha / spec.rank
        prompts = [p["prompt_ids"] for p in pairs] * 2
        responses = [p["chosen_ids"] for p in pairs] + [p["rejected_ids"] for p in pairs]
        with torch.no_grad():
            pol, _ = gpt2.sequence_logps(merged_policy(base, members, scale), prompts, responses)
            ini, _ = gpt2.sequence_logps(merged_policy(base, initial, scale), prompts, responses)
        n = len(pairs)
        rc, rr = pol[:n] - ini[:n], pol[n:] - ini[n:]
        margin = rc - rr
        pa["accuracy"] = float(((margin > 0).double() + 0.5 * (margin == 0).double()).mean())
        pa["meanMargin"] = float(margin.mean())
        bal = length_balanced(margin.tolist(), [len(p["chosen_ids"]) for p in pairs], [len(p["rejected_ids"]) for p in pairs])
        if bal is not None:
            pa["lengthBalanced"] = bal
    write_json(path, pa)
    log(f"pair accuracy of policy {j} on phase {k}'s pairs: {pa.get('accuracy')}")
    return pa


def train(spec, ws, k, m, log):
    """Trains member m in phase k and returns the StageResult fields (without stage/phase/index)."""
    if not 0 <= m < spec.members:
        raise RuntimeError(f"member index {m} outside [0,{spec.members})")
    mdir = model_dir(spec, ws)
    base = gpt2.Base(mdir)
    pairs = ws.read_pairs(k)
    scale = spec.alpha / spec.rank
    opt = adamw.AdamW(spec.lr, spec.total_steps, spec.max_grad_norm)
    if k == 1:
        adapter = initial_adapter(spec, ws, base, mdir, m)
    else:
        prev = ws.member_dir(k - 1, m)
        adapter = load_adapter(os.path.join(prev, "adapter.safetensors"), base, spec.rank, spec.alpha)[0]
        path = os.path.join(prev, "optimizer.safetensors")
        st, meta = safetensors_io.read(path)
        opt.restore(st, meta, {n: t.shape for n, t in adapter.items()}, path)
    out_dir = ws.member_dir(k, m)
    result = {"pairs": len(pairs), "checkpoint": ws.rel(out_dir)}
    if m == 0 and k >= 2:
        # Member 0 measures the pair diagnostics of the policy after phase k-1 before any step,
        # as the Go stage does (pipeline/train.go); they touch neither the member nor the order.
        fresh = pair_accuracy(spec, ws, base, mdir, k - 1, k, log)
        result["freshPairAccuracy"] = fresh.get("accuracy")
        result["freshLengthBalanced"] = fresh.get("lengthBalanced")
        result["prevTrainPairAccuracy"] = pair_accuracy(spec, ws, base, mdir, k - 1, k - 1, log).get("accuracy")
    if not pairs:
        result["message"] = "no pairs in this phase (all ties or identical): member unchanged"
        save_member(out_dir, adapter, opt, spec, k)
        return result

    params = {n: t.clone().requires_grad_(True) for n, t in adapter.items()}  # float64 master copies
    P = spec.pairs_per_step
    length_norm = spec.loss == "ipo" and spec.ipo_length_normalize
    steps = spec.steps_per_epoch
    done = 0
    for ep in range(spec.epochs_per_phase):
        # The same order for every member: members differ only by their adapters.
        order = gorand.PCG(gorand.stream_seed(spec.seed, "order", k), ep).perm(len(pairs))
        for s in range(steps):
            batch = [pairs[order[(s * P + i) % len(order)]] for i in range(P)]
            loss = batch_loss(spec, base, params, scale, batch, length_norm)
            grads = torch.autograd.grad(loss, [params[n] for n in sorted(params)])
            opt.step({n: params[n].data for n in params}, dict(zip(sorted(params), grads)))
            done += 1
            log(f"phase {k} train {m}: step {done}/{spec.epochs_per_phase * steps} loss {loss.item():.6f}")
    result["steps"] = done
    adapter = {n: t.detach() for n, t in params.items()}

    # Diagnostics of the trained member over all of the phase's pairs.
    with torch.no_grad():
        pc, pr, cc, cr = policy_logps(base, adapter, scale, pairs)
    rc = torch.tensor([p["reference_logps"][0] for p in pairs], dtype=torch.float64)
    rr = torch.tensor([p["reference_logps"][1] for p in pairs], dtype=torch.float64)
    bl = torch.tensor([v for p in pairs for v in p["behavior_logps"]], dtype=torch.float64)
    lpc, lpr, lrc, lrr = pc, pr, rc, rr
    if length_norm:
        lpc, lpr, lrc, lrr = pc / cc, pr / cr, rc / cc, rr / cr
    result["loss"] = float(losses.mean_loss(spec.loss, spec.beta, lpc, lpr, lrc, lrr))
    result["rewardAccuracy"], result["rewardMargin"] = losses.diagnostics(spec.beta, pc, pr, rc, rr)
    # KL(behavior || policy) on the behavior model's own samples, chosen and rejected interleaved.
    result["klToReference"] = losses.kl_estimate(bl, torch.stack([pc, pr], dim=1).reshape(-1))
    save_member(out_dir, adapter, opt, spec, k)
    return result


def batch_loss(spec, base, params, scale, batch, length_norm):
    pc, pr, cc, cr = policy_logps(base, params, scale, batch)
    rc = torch.tensor([p["reference_logps"][0] for p in batch], dtype=torch.float64)
    rr = torch.tensor([p["reference_logps"][1] for p in batch], dtype=torch.float64)
    if length_norm:
        # IPO with ipoLengthNormalize: per-token means of policy and reference (TRL's convention).
        pc, pr, rc, rr = pc / cc, pr / cr, rc / cc, rr / cr
    return losses.mean_loss(spec.loss, spec.beta, pc, pr, rc, rr)


def policy_logps(base, adapter, scale, pairs):
    """Chosen and rejected response log-prob sums under base + adapter, and the token counts
    (clamped to 1, as pipeline.perToken divides by max(n, 1))."""
    n = len(pairs)
    prompts = [p["prompt_ids"] for p in pairs] * 2
    responses = [p["chosen_ids"] for p in pairs] + [p["rejected_ids"] for p in pairs]
    sums, counts = gpt2.sequence_logps(base, prompts, responses, adapter, scale)
    counts = torch.tensor([max(c, 1) for c in counts], dtype=torch.float64)
    return sums[:n], sums[n:], counts[:n], counts[n:]


def save_member(out_dir, adapter, opt, spec, k):
    """adapter.safetensors (F32, metadata format/rank/alpha), optimizer.safetensors (F64 moments
    "m/<name>", "v/<name>", metadata step) and rng.json, as pipeline.saveMember writes them. The
    done marker comes after these, from the caller."""
    os.makedirs(out_dir, exist_ok=True)
    alpha = str(spec.alpha)  # strconv.FormatFloat(alpha, 'g', -1, 64) of an integer alpha
    safetensors_io.write(os.path.join(out_dir, "adapter.safetensors"), adapter,
                         {"format": "pt", "rank": str(spec.rank), "alpha": alpha}, torch.float32)
    tensors, meta = opt.state_tensors()
    safetensors_io.write(os.path.join(out_dir, "optimizer.safetensors"), tensors, meta, torch.float64)
    # Batch orders derive from (seed, phase, epoch): the seed and the phase reached are the whole state.
    safetensors_io.write_atomic(os.path.join(out_dir, "rng.json"),
                                json.dumps({"seed": spec.seed, "phase": k}, separators=(",", ":")).encode())
