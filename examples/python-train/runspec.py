"""The part of run.yaml (an AlignmentRun manifest, /etc/bpo/run.yaml) the train stage reads.

The operator's run.yaml carries the API server's defaults; a hand-written one (bpo run -f) may
not, so the defaults the train stage depends on are filled here as api/v1alpha1.SetDefaults does
(a Go test, examples/python-train/example_test.go, checks this file against the Go values).
"""
from dataclasses import dataclass

import yaml

# api/v1alpha1/defaults.go, the fields train uses.
DEFAULTS = {
    "loss.type": "dpo",
    "loss.beta": "0.1",
    "loss.ipoLengthNormalize": True,
    "trustRegion.phases": 2,
    "budget.pairsPerStep": 16,
    "budget.epochsPerPhase": 1,
    "ensemble.members": 5,
    "ensemble.rank": 8,
    "ensemble.alpha": 16,
    "trainer.learningRate": "5e-5",
    "trainer.maxGradNorm": "1.0",
    "seed": 1,
}


@dataclass
class RunSpec:
    name: str
    uid: str
    loss: str
    beta: float
    ipo_length_normalize: bool
    phases: int
    pairs: int
    pairs_per_step: int
    epochs_per_phase: int
    members: int
    rank: int
    alpha: int
    lr: float
    max_grad_norm: float
    seed: int
    model_builtin: str
    model_path: str

    @property
    def pairs_per_phase(self):
        return self.pairs // self.phases

    @property
    def steps_per_epoch(self):
        """ceil(pairs/F / pairsPerStep): the planned steps of one pass, whatever ties removed."""
        return -(-self.pairs_per_phase // self.pairs_per_step)

    @property
    def total_steps(self):
        """T of pipeline.Run.TotalSteps: the linear decay of the learning rate ends there."""
        return self.phases * self.epochs_per_phase * self.steps_per_epoch


def _get(spec, dotted):
    cur = spec
    for part in dotted.split("."):
        if not isinstance(cur, dict) or cur.get(part) in (None, "", 0):
            return DEFAULTS[dotted]
        cur = cur[part]
    return cur


def load(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict) or doc.get("kind", "AlignmentRun") != "AlignmentRun":
        raise ValueError(f"{path}: not an AlignmentRun manifest")
    meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
    if not meta.get("name"):
        raise ValueError(f"{path}: metadata.name is empty (it names the run's workspace folder)")
    model = spec.get("model") or {}
    budget = spec.get("budget") or {}
    if not budget.get("pairs"):
        raise ValueError(f"{path}: spec.budget.pairs must be set (> 0)")
    try:
        beta = float(_get(spec, "loss.beta"))
        lr = float(_get(spec, "trainer.learningRate"))
        max_grad_norm = float(_get(spec, "trainer.maxGradNorm"))
    except ValueError as e:
        raise ValueError(f"{path}: spec.loss.beta, spec.trainer.learningRate and maxGradNorm must be decimals: {e}")
    loss = str(_get(spec, "loss.type")).lower()
    if loss not in ("dpo", "ipo", "slic"):
        raise ValueError(f"{path}: spec.loss.type {loss!r}: want dpo, ipo or slic")
    ipo_norm = (spec.get("loss") or {}).get("ipoLengthNormalize")
    length_alpha = (spec.get("loss") or {}).get("lengthAlpha")
    if length_alpha not in (None, "") and float(length_alpha) != 0:
        # Training without the term would be silently another loss; refuse instead.
        raise ValueError(f"{path}: spec.loss.lengthAlpha {length_alpha!r}: this example does not implement "
                         "R-DPO's length term; remove it, or train with bpo's own train stage")
    return RunSpec(
        name=meta["name"], uid=str(meta.get("uid") or ""),
        loss=loss, beta=beta,
        ipo_length_normalize=DEFAULTS["loss.ipoLengthNormalize"] if ipo_norm is None else bool(ipo_norm),
        phases=int(_get(spec, "trustRegion.phases")),
        pairs=int(budget["pairs"]),
        pairs_per_step=int(_get(spec, "budget.pairsPerStep")),
        epochs_per_phase=int(_get(spec, "budget.epochsPerPhase")),
        members=int(_get(spec, "ensemble.members")),
        rank=int(_get(spec, "ensemble.rank")),
        alpha=int(_get(spec, "ensemble.alpha")),
        lr=lr, max_grad_norm=max_grad_norm,
        seed=max(int(spec.get("seed") or 0), 0) or DEFAULTS["seed"],
        model_builtin=model.get("builtin") or "", model_path=model.get("path") or "",
    )
