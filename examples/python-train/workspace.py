"""The run's workspace folder as docs/stage-contract.md lays it out (pipeline/workspace.go)."""
import json
import os

import safetensors_io


class Workspace:
    def __init__(self, volume, name, uid):
        self.volume = volume
        self.root = os.path.join(volume, name)
        self._claim(name, uid)

    def _claim(self, name, uid):
        """owner.json: the first stage to open the folder writes it; a folder owned by another
        run (uid) is refused, so two runs sharing a volume never mix their files."""
        path = os.path.join(self.root, "owner.json")
        try:
            with open(path) as f:
                have = json.load(f)
        except FileNotFoundError:
            write_json(path, {"name": name, "uid": uid})
            return
        if have.get("name") != name or (have.get("uid") and uid and have["uid"] != uid):
            raise RuntimeError(f"workspace: {self.root} belongs to run {have.get('name')!r} (uid {have.get('uid')}), "
                               f"not {name!r} (uid {uid}); use another workspace or delete the old run's folder")

    def phase(self, k):
        return os.path.join(self.root, f"phase-{k}")

    def member_dir(self, k, m):
        return os.path.join(self.phase(k), "members", f"member-{m}")

    def done_path(self, k, stage, index):
        name = stage if index < 0 else f"{stage}-{index}"
        return os.path.join(self.phase(k), name + ".done.json")

    def pairs_path(self, k, shard):
        return os.path.join(self.phase(k), "pairs", f"shard-{shard}.jsonl")

    def shard_plan_path(self, k, stage):
        return os.path.join(self.phase(k), f"{stage}-shards.json")

    def diagnostics_path(self, policy_phase, pairs_phase):
        name = "train-pairs.json" if policy_phase == pairs_phase else "fresh-pairs.json"
        return os.path.join(self.phase(pairs_phase), "diagnostics", name)

    def rel(self, path):
        """A path relative to the volume: what StageResult.checkpoint holds ("<run>/phase-k/...")."""
        return os.path.relpath(path, self.volume)

    def read_pairs(self, k):
        """Every recorded label shard's pairs of phase k, in shard order (pipeline.Env.PhasePairs).
        Each shard must be done, and hold the pairs its done marker counted."""
        plan = read_json(self.shard_plan_path(k, "label"), f"phase {k} has no label shards yet: run the label stage first")
        if plan.get("stage") != "label" or plan.get("phase") != k or int(plan.get("shards", 0)) < 1:
            raise RuntimeError(f"shard plan {self.shard_plan_path(k, 'label')} is inconsistent ({plan})")
        pairs = []
        for s in range(int(plan["shards"])):
            done = read_json(self.done_path(k, "label", s), f"label shard {s} of phase {k} has not finished: run the label stage first")
            path = self.pairs_path(k, s)
            rows = []
            with open(path) as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except ValueError as e:
                            raise RuntimeError(f"{path}:{n}: {e}")
            if len(rows) != int(done.get("pairs", 0)):
                raise RuntimeError(f"pair shard {s} of phase {k} holds {len(rows)} pairs, its label stage kept {done.get('pairs', 0)} ({path})")
            pairs.extend(rows)
        return pairs


def read_json(path, missing_hint):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise RuntimeError(f"{missing_hint} ({path} is missing)")
    except ValueError as e:
        raise RuntimeError(f"{path} is corrupt ({e})")


def write_json(path, doc):
    """As fsutil.WriteJSON: indented by two spaces, a final newline, written atomically."""
    safetensors_io.write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode())
