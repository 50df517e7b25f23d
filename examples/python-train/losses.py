"""The direct-alignment losses and the reward diagnostics, as trainer/loss defines them.

All losses are functions of the log-ratio margin per pair
    h = [log pi(y_w|x) - log ref(y_w|x)] - [log pi(y_l|x) - log ref(y_l|x)]
and the batch loss is the mean over pairs:
    DPO:  -log sigmoid(beta*h) = softplus(-beta*h)
    IPO:  (h - 1/(2*beta))^2
    SLiC: max(0, 1 - beta*h)
"""
import torch

KINDS = ("dpo", "ipo", "slic")


def per_pair(kind, beta, pc, pr, rc, rr):
    """The per-pair losses (tensors in, tensor out; differentiable in pc and pr)."""
    if not beta > 0 or beta == float("inf"):
        raise ValueError(f"spec.loss.beta must be positive and finite, got {beta}")
    h = (pc - rc) - (pr - rr)
    if kind == "dpo":
        # softplus(z) = relu(z) + log1p(exp(-|z|)): no overflow for any beta*h (torch's own
        # softplus switches to the identity above a threshold, which changes the gradient).
        z = -beta * h
        return torch.relu(z) + torch.log1p(torch.exp(-torch.abs(z)))
    if kind == "ipo":
        return (h - 1.0 / (2.0 * beta)) ** 2
    if kind == "slic":
        return torch.relu(1.0 - beta * h)
    raise ValueError(f"spec.loss.type: unknown loss {kind!r} (valid: dpo, ipo, slic)")


def mean_loss(kind, beta, pc, pr, rc, rr):
    return per_pair(kind, beta, pc, pr, rc, rr).mean()


def diagnostics(beta, pc, pr, rc, rr):
    """(accuracy, margin): the share of pairs whose implicit reward beta*(log pi - log ref) of
    the chosen response is strictly greater, and the mean reward margin (trainer/loss.Diagnostics)."""
    c = beta * (pc - rc)
    r = beta * (pr - rr)
    n = len(pc)
    if n == 0:
        return 0.0, 0.0
    return float((c > r).sum()) / n, float((c - r).sum()) / n


def kl_estimate(logp_sampler, logp_other):
    """Monte-Carlo KL(sampler || other) on the sampler's own samples (trainer/loss.KLEstimate)."""
    if len(logp_sampler) == 0:
        return 0.0
    return float((logp_sampler - logp_other).sum()) / len(logp_sampler)
