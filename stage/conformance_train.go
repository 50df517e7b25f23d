package stage

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/trainer/loss"
	"github.com/bpo-dev/bpo/trainer/model"
)

// Tolerances of the "train-metrics" check, which recomputes a member's reported diagnostics from
// its adapter with bpo's own float32 inference: two float32 engines agree on a response log-prob
// sum to ~1e-5 relative, which moves a loss near 0.7 by ~1e-5; 1e-3 leaves room for another
// engine's summation order and still catches a wrong formula, a stale adapter or invented numbers.
// (A reward accuracy may differ by one pair whose two rewards are within float32 noise of a tie.)
const trainMetricTol = 1e-3

// checkMembers checks the train stage's outputs: each member's adapter, optimizer state and rng
// record exist and load the way the next stages load them ("outputs"); the adapter has the
// spec's rank and alpha, the optimizer state covers exactly the adapter's tensors and counts the
// steps taken, the rng record names the run's seed and the phase ("member-state"); each marker's
// numbers are present, finite and consistent with the phase ("train-result"); and the reported
// loss, reward accuracy and margin are what the written adapter gives on the phase's pairs
// ("train-metrics").
func checkMembers(r *Report, f *Fixture, env *pipeline.Env, markers []*v1alpha1.StageResult) [][]string {
	paths := make([][]string, f.Shards)
	var missing error
	for m := range f.Shards {
		for _, name := range []string{"adapter.safetensors", "optimizer.safetensors", "rng.json"} {
			p := filepath.Join(env.WS.MemberDir(f.Phase, m), name)
			if _, err := os.Stat(p); err != nil {
				missing = errors.Join(missing, err)
			} else {
				paths[m] = append(paths[m], p)
			}
		}
	}
	var members []*model.Adapter
	if missing == nil {
		members, missing = env.Members(f.Phase) // the next phase's sample stage loads them like this
	}
	r.add("outputs", missing, fmt.Sprintf("%d members' adapter, optimizer state and rng record, loadable", f.Shards))
	if missing != nil {
		return paths
	}
	pairs, err := env.PhasePairs(f.Phase)
	if err != nil {
		r.add("train-result", fmt.Errorf("fixture pairs: %w", err), "")
		return paths
	}
	var stateErr, resultErr, metricErr error
	for m, a := range members {
		stateErr = errors.Join(stateErr, memberState(env, f.Phase, m, a, markers[m]))
		if markers[m] == nil {
			continue // done-markers failed already
		}
		resultErr = errors.Join(resultErr, trainResult(env, f.Phase, m, markers[m], len(pairs)))
		metricErr = errors.Join(metricErr, trainMetrics(env, m, a, markers[m], pairs))
	}
	r.add("member-state", stateErr, "rank and alpha as specified; optimizer moments for every adapter tensor and the step count; rng record")
	r.add("train-result", resultErr, "pairs, steps, checkpoint and finite diagnostics in every marker")
	r.add("train-metrics", metricErr, fmt.Sprintf("reported loss, reward accuracy and margin match the adapters on the %d pairs (tolerance %g)", len(pairs), trainMetricTol))
	return paths
}

// memberState checks member m's adapter against the spec, its optimizer state against the adapter
// and the steps taken since phase k-1, and its rng record.
func memberState(env *pipeline.Env, k, m int, a *model.Adapter, marker *v1alpha1.StageResult) error {
	dir := env.WS.MemberDir(k, m)
	ens := env.Run.Spec.Ensemble
	var errs []error
	if a.Rank != int(ens.Rank) || a.Alpha != float64(ens.Alpha) {
		errs = append(errs, fmt.Errorf("member %d: adapter has rank %d alpha %g, spec.ensemble says %d and %d", m, a.Rank, a.Alpha, ens.Rank, ens.Alpha))
	}
	step, err := optimizerState(filepath.Join(dir, "optimizer.safetensors"), a)
	if err != nil {
		errs = append(errs, fmt.Errorf("member %d: %w", m, err))
	} else if marker != nil {
		prev := 0
		if k > 1 {
			if prev, err = optimizerState(filepath.Join(env.WS.MemberDir(k-1, m), "optimizer.safetensors"), a); err != nil {
				errs = append(errs, fmt.Errorf("member %d after phase %d: %w", m, k-1, err))
			}
		}
		if step != prev+int(marker.Steps) {
			errs = append(errs, fmt.Errorf("member %d: optimizer step %d, want %d (phase %d's) + %d (the marker's steps)", m, step, prev, k-1, marker.Steps))
		}
	}
	var rng struct {
		Seed  uint64 `json:"seed"`
		Phase int    `json:"phase"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "rng.json"))
	if err == nil {
		err = json.Unmarshal(data, &rng)
	}
	if err == nil && (rng.Seed != env.Run.Seed || rng.Phase != k) {
		err = fmt.Errorf("holds seed %d phase %d, want the run's seed %d and phase %d", rng.Seed, rng.Phase, env.Run.Seed, k)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("member %d: rng.json: %w", m, err))
	}
	return errors.Join(errs...)
}

// optimizerState reads optimizer.safetensors as the Go trainer restores it (pipeline.loadOptimizer):
// __metadata__ step, and "m/<name>", "v/<name>" finite moments (v >= 0) for every adapter tensor,
// of its length, or none at all before the first step.
func optimizerState(path string, a *model.Adapter) (int, error) {
	tensors, meta, err := model.LoadTensors(path)
	if err != nil {
		return 0, err
	}
	step, err := strconv.Atoi(meta["step"])
	if err != nil || step < 0 {
		return 0, fmt.Errorf("%s: __metadata__ step %q is not a count", path, meta["step"])
	}
	if len(tensors) == 0 && step == 0 {
		return 0, nil
	}
	var want []string
	for name, t := range a.Tensors {
		for _, kind := range []string{"m/", "v/"} {
			want = append(want, kind+name)
			mt, ok := tensors[kind+name]
			if !ok {
				return 0, fmt.Errorf("%s: no %s%s", path, kind, name)
			}
			if len(mt.Data) != len(t.Data) {
				return 0, fmt.Errorf("%s: %s%s has %d values, the adapter tensor %d", path, kind, name, len(mt.Data), len(t.Data))
			}
			for _, v := range mt.Data {
				if math.IsNaN(v) || math.IsInf(v, 0) || (kind == "v/" && v < 0) {
					return 0, fmt.Errorf("%s: %s%s holds %v", path, kind, name, v)
				}
			}
		}
	}
	if len(tensors) != len(want) {
		var extra []string
		for name := range tensors {
			if !slices.Contains(want, name) {
				extra = append(extra, name)
			}
		}
		return 0, fmt.Errorf("%s: unexpected tensors %s", path, strings.Join(extra, ", "))
	}
	return step, nil
}

// trainResult checks a member's marker: the phase's pairs, the planned steps (every epoch takes
// ceil(pairs/F / pairsPerStep) steps whatever ties removed), its checkpoint folder, the diagnostics
// present and finite when it trained, and member 0's pair accuracies from phase 2 on.
func trainResult(env *pipeline.Env, k, m int, r *v1alpha1.StageResult, pairs int) error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("member %d: "+format, append([]any{m}, args...)...))
	}
	P := int(env.Run.Spec.Budget.PairsPerStep)
	steps := int(env.Run.Spec.Budget.EpochsPerPhase) * ((env.Run.PairsPerPhase() + P - 1) / P)
	if pairs == 0 {
		steps = 0
	}
	if int(r.Pairs) != pairs || int(r.Steps) != steps {
		fail("marker says %d pairs and %d steps, want %d pairs (the phase's) and %d steps (spec.budget)", r.Pairs, r.Steps, pairs, steps)
	}
	if want := env.WS.Rel(env.WS.MemberDir(k, m)); r.Checkpoint != want {
		fail("checkpoint %q, want %q", r.Checkpoint, want)
	}
	if pairs > 0 {
		for name, v := range map[string]*float64{"loss": r.Loss, "rewardAccuracy": r.RewardAccuracy, "rewardMargin": r.RewardMargin, "klToReference": r.KLToReference} {
			if v == nil || math.IsNaN(*v) || math.IsInf(*v, 0) {
				fail("%s is missing or not finite", name)
			}
		}
	}
	if m == 0 && k >= 2 && pairs > 0 && (r.FreshPairAccuracy == nil || r.PrevTrainPairAccuracy == nil) {
		fail("member 0 of phase %d must report freshPairAccuracy and prevTrainPairAccuracy", k)
	}
	return errors.Join(errs...)
}

// trainMetrics recomputes member m's loss, reward accuracy and margin over the phase's pairs from
// the adapter it wrote, with bpo's inference on base + adapter, and compares them with the marker.
func trainMetrics(env *pipeline.Env, m int, a *model.Adapter, r *v1alpha1.StageResult, pairs []pipeline.Pair) error {
	if len(pairs) == 0 || r.Loss == nil || r.RewardAccuracy == nil || r.RewardMargin == nil {
		return nil // trainResult reports what is missing
	}
	b, err := env.LoadBase()
	if err != nil {
		return err
	}
	n := len(pairs)
	prompts, responses := make([][]int, 2*n), make([][]int, 2*n)
	for i, p := range pairs {
		prompts[i], responses[i] = p.PromptIDs, p.ChosenIDs
		prompts[n+i], responses[n+i] = p.PromptIDs, p.RejectedIDs
	}
	lp, counts, err := model.NewInference(model.MergeMean(b.Weights, []*model.Adapter{a})).SequenceLogProbs(prompts, responses)
	if err != nil {
		return err
	}
	pc, pr, rc, rr := lp[:n], lp[n:], make([]float64, n), make([]float64, n)
	for i, p := range pairs {
		rc[i], rr[i] = p.ReferenceLogps[0], p.ReferenceLogps[1]
	}
	want := env.Run.LossAsTrained(pc, pr, rc, rr, counts[:n], counts[n:])
	st := loss.Diagnostics(env.Run.Beta, pc, pr, rc, rr)
	var errs []error
	near := func(name string, got, want, tol float64) {
		if !(math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))) {
			errs = append(errs, fmt.Errorf("member %d: reported %s %.6g, its adapter gives %.6g", m, name, got, want))
		}
	}
	near("loss", *r.Loss, want, trainMetricTol)
	near("rewardMargin", *r.RewardMargin, st.Margin, trainMetricTol)
	near("rewardAccuracy", *r.RewardAccuracy, st.Accuracy, 1/float64(n)+1e-9)
	return errors.Join(errs...)
}
