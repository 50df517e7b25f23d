"""AdamW exactly as trainer/optim.AdamW steps (the Go trainer's optimizer), on float64 tensors.

Order of a step: the global L2 norm of every gradient; if it exceeds max_grad_norm every gradient
is scaled by max_grad_norm/norm (no 1e-6 in the denominator, unlike torch's clip_grad_norm_);
lr = the schedule at the steps taken so far; then per value m, v and the bias-corrected update
p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps). Weight decay is 0 in bpo's configuration
(optim.DefaultConfig), so it is left out. torch.optim.AdamW differs in the clipping epsilon and in
how eps meets the bias correction, so it would drift from the Go numbers: hence this file.
"""
import math

import torch


class AdamW:
    def __init__(self, lr, total_steps, max_grad_norm=1.0, beta1=0.9, beta2=0.999, eps=1e-8):
        if total_steps <= 0:
            raise ValueError(f"linear decay needs total steps > 0, got {total_steps}")
        self.lr, self.total = lr, total_steps
        self.max_grad_norm = max_grad_norm if max_grad_norm != 0 else 1.0
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.step_count = 0
        self.m, self.v = {}, {}

    def lr_at(self, s):
        """optim.Config.LRAt for DefaultConfig: linear decay from lr to 0 over total steps."""
        if s >= self.total:
            return 0.0
        return self.lr * ((self.total - s) / self.total)

    @torch.no_grad()
    def step(self, params, grads):
        """params, grads: {name: float64 tensor}; params are updated in place."""
        names = sorted(params)
        if not self.m:
            for n in names:
                self.m[n] = torch.zeros_like(params[n], dtype=torch.float64)
                self.v[n] = torch.zeros_like(params[n], dtype=torch.float64)
        if sorted(self.m) != names:
            raise ValueError("optimizer state and parameters name different tensors")
        norm = math.sqrt(sum(float((grads[n].double() ** 2).sum()) for n in names))
        scale = 1.0
        if self.max_grad_norm > 0 and norm > self.max_grad_norm:
            scale = self.max_grad_norm / norm
        lr = self.lr_at(self.step_count)
        self.step_count += 1
        bc1 = 1 - self.b1 ** self.step_count
        bc2 = 1 - self.b2 ** self.step_count
        for n in names:
            g = grads[n].double() * scale
            m, v = self.m[n], self.v[n]
            m.mul_(self.b1).add_((1 - self.b1) * g)
            v.mul_(self.b2).add_((1 - self.b2) * g * g)
            params[n].sub_(lr * (m / bc1) / (torch.sqrt(v / bc2) + self.eps))
        return norm, lr

    def state_tensors(self):
        """The tensors of optimizer.safetensors ("m/<name>", "v/<name>", flat) and its metadata."""
        t = {}
        for n in self.m:
            t["m/" + n] = self.m[n].reshape(-1)
            t["v/" + n] = self.v[n].reshape(-1)
        return t, {"step": str(self.step_count)}

    def restore(self, tensors, meta, shapes, path):
        """Loads optimizer.safetensors as the Go stage wrote it; shapes maps names to the adapter's."""
        try:
            self.step_count = int(meta["step"])
        except (KeyError, ValueError):
            raise ValueError(f"{path}: __metadata__ step {meta.get('step')!r} is not an integer")
        for key, t in tensors.items():
            kind, _, name = key.partition("/")
            if kind not in ("m", "v") or name not in shapes:
                raise ValueError(f"{path}: unexpected tensor {key} in optimizer state")
            (self.m if kind == "m" else self.v)[name] = t.reshape(shapes[name]).clone()
        if sorted(self.m) != sorted(self.v):
            raise ValueError(f"{path}: first and second moments name different tensors")
