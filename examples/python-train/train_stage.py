#!/usr/bin/env python3
"""bpo's train stage in PyTorch: a second engine that honours the stage contract v1.

    train_stage.py [train] --config /etc/bpo/run.yaml --workspace /workspace --phase K \
        [--index M] --termination-log /dev/termination-log

trains ensemble member M (default $JOB_COMPLETION_INDEX) of phase K of the run in run.yaml and
writes exactly what `bpo train` writes (docs/stage-contract.md): the member's adapter, optimizer
state and rng record, then its done marker, then the StageResult as the last line of stdout and
to the termination log. Run it under `bpo conformance train -- python3 train_stage.py`.
See README.md beside this file.
"""
import argparse
import json
import os
import sys
import time

# Sibling modules, wherever the script is started from.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import member  # noqa: E402
import runspec  # noqa: E402
from workspace import Workspace, write_json  # noqa: E402

MAX_RESULT_BYTES = 4096  # v1alpha1.MaxStageResultBytes: the kubelet cuts termination messages there

# StageResult's JSON fields in Go's order (api/v1alpha1/stageresult.go), so the document reads
# like the Go stage's; zero counts and unset metrics are left out, as Go's omitempty does.
FIELDS = ("stage", "phase", "index", "pairs", "loss", "rewardAccuracy", "rewardMargin", "klToReference",
          "steps", "freshPairAccuracy", "freshLengthBalanced", "prevTrainPairAccuracy", "checkpoint", "durationSeconds",
          "message")


# The metrics Go holds as pointers: present whenever set, even at 0.
POINTERS = {"loss", "rewardAccuracy", "rewardMargin", "klToReference", "freshPairAccuracy", "freshLengthBalanced",
            "prevTrainPairAccuracy"}


def encode_result(res):
    doc = {"stage": res["stage"], "phase": res["phase"], "index": res["index"]}
    for key in FIELDS[3:]:
        v = res.get(key)
        if v is None or (key not in POINTERS and not v):
            continue
        doc[key] = v
    data = json.dumps(doc, separators=(",", ":"))
    while len(data.encode()) > MAX_RESULT_BYTES and doc.get("message"):
        # Only the free-form message is shortened; the numbers the controller reads never are.
        over = len(data.encode()) - MAX_RESULT_BYTES
        doc["message"] = doc["message"][: max(len(doc["message"]) - over - 1, 0)] + "…"
        data = json.dumps(doc, separators=(",", ":"))
    return data


def report(res, term_log, out):
    data = encode_result(res)
    if term_log:
        with open(term_log, "w") as f:
            f.write(data)
    if out is not None:
        out.write(data + "\n")
        out.flush()


def run(args, log):
    spec = runspec.load(args.config)
    if not 1 <= args.phase <= spec.phases:
        raise RuntimeError(f"--phase {args.phase}: want 1..{spec.phases} (spec.trustRegion.phases)")
    ws = Workspace(args.workspace, spec.name, os.environ.get("BPO_RUN_UID") or spec.uid)
    done = ws.done_path(args.phase, "train", args.index)
    if os.path.exists(done):
        # Idempotence: a finished member reports its stored result again and does nothing else.
        try:
            with open(done) as f:
                return json.load(f)
        except ValueError as e:
            raise RuntimeError(f"stage marker {done} is corrupt ({e}): delete it to rerun the stage")
    start = time.monotonic()
    res = {"stage": "train", "phase": args.phase, "index": args.index}
    res.update(member.train(spec, ws, args.phase, args.index, log))
    res["durationSeconds"] = time.monotonic() - start
    # The marker is written last, after every output: a stage killed before it simply runs again.
    write_json(done, json.loads(encode_result(res)))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description="bpo's train stage in PyTorch (stage contract v1)")
    ap.add_argument("stage", nargs="?", default="train", choices=["train"])
    ap.add_argument("--config", default="/etc/bpo/run.yaml")
    ap.add_argument("--workspace", default="/workspace")
    ap.add_argument("--phase", type=int, default=0)
    ap.add_argument("--index", type=int, default=-1, help="ensemble member (default $JOB_COMPLETION_INDEX)")
    ap.add_argument("--termination-log", default="/dev/termination-log")
    ap.add_argument("--data-dir", default="", help="accepted for the contract; train reads no data")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("BPO_TORCH_THREADS", "1")),
                    help="torch CPU threads (default 1, or $BPO_TORCH_THREADS)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(args.threads, 1))
    log = lambda msg: print(f"train_stage.py: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.index < 0:
            v = os.environ.get("JOB_COMPLETION_INDEX")
            if v is None:
                raise RuntimeError("--index is not set and JOB_COMPLETION_INDEX is not in the environment")
            try:
                args.index = int(v)
            except ValueError:
                raise RuntimeError(f"JOB_COMPLETION_INDEX={v!r} is not an integer")
        res = run(args, log)
    except Exception as e:  # the contract: a result whose message is the error, and a non-zero exit
        msg = f"phase {args.phase} train: {e}"
        log(msg)
        report({"stage": "train", "phase": max(args.phase, 0), "index": max(args.index, 0), "message": msg},
               args.termination_log, None)
        return 1
    report(res, args.termination_log, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
