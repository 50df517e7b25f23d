package pipeline

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	gorgonia "gorgonia.org/gorgonia"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/trainer/loss"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/optim"
)

// TotalSteps is T, the run's optimizer steps per member: F phases of epochsPerPhase passes
// over pairs/F pairs. Ties shrink a phase's data but not its steps (batches wrap around the
// kept pairs), so every arm of a comparison takes the same steps and decays its learning rate
// identically.
func (r *Run) TotalSteps() int {
	per := (r.PairsPerPhase() + int(r.Spec.Budget.PairsPerStep) - 1) / int(r.Spec.Budget.PairsPerStep)
	return r.Phases() * int(r.Spec.Budget.EpochsPerPhase) * per
}

func (r *Run) objective() model.Objective {
	kind, beta := r.Loss, r.Beta
	return model.Objective{
		Loss: func(pc, pr, rc, rr *gorgonia.Node) (*gorgonia.Node, error) {
			return loss.Node(kind, beta, pc, pr, rc, rr)
		},
		LengthNormalize: kind == loss.IPO && deref(r.Spec.Loss.IPOLengthNormalize, true),
	}
}

// LossAsTrained is the mean loss the train stage optimises, on pairs whose policy and reference
// response log-prob sums are pc, pr, rc, rr and whose response token counts are cc, cr: with
// R-DPO's length term (spec.loss.lengthAlpha, loss.ShiftReference) and, for length-normalised
// IPO, per-token means, as the training graph computes it.
func (r *Run) LossAsTrained(pc, pr, rc, rr []float64, cc, cr []int) float64 {
	lpc, lpr := pc, pr
	lrc, lrr := loss.ShiftReference(rc, cc, r.LengthAlpha, r.Beta), loss.ShiftReference(rr, cr, r.LengthAlpha, r.Beta)
	if r.objective().LengthNormalize {
		lpc, lpr, lrc, lrr = perToken(pc, cc), perToken(pr, cr), perToken(rc, cc), perToken(rr, cr)
	}
	v, _ := loss.Values(r.Loss, r.Beta, lpc, lpr, lrc, lrr)
	return v
}

// Train is the train stage of phase k for ensemble member m: the member continues from
// its adapter and optimizer state after phase k-1 and takes epochsPerPhase passes of the
// planned ceil(pairs/F / pairsPerStep) steps over the phase's kept pairs (wrapping around when
// ties removed some), in the same order as every other member, against the reference
// log-probs the sample stage recorded. Member 0 of a phase k >= 2 first measures the pair
// diagnostics of the policy after phase k-1 (diagnostics.go).
func (e *Env) Train(k, m int) (v1alpha1.StageResult, error) {
	if len(e.TrainCommand) > 0 {
		return e.trainExternal(k, m)
	}
	return e.once(k, v1alpha1.StageTrain, m, func(r *v1alpha1.StageResult) error {
		if m < 0 || m >= e.Run.Members() {
			return fmt.Errorf("member index %d outside [0,%d)", m, e.Run.Members())
		}
		b, err := e.LoadBase()
		if err != nil {
			return err
		}
		pairs, err := e.PhasePairs(k)
		if err != nil {
			return err
		}
		adapter, opt, err := e.loadMember(k-1, m)
		if err != nil {
			return err
		}
		dir := e.WS.MemberDir(k, m)
		r.Checkpoint = e.WS.Rel(dir)
		r.Pairs = int64(len(pairs))
		if m == 0 && k >= 2 {
			// Before any step, the policy these pairs were sampled from (the merged ensemble after
			// phase k-1) is measured on them (fresh pairs) and on the pairs it was trained on
			// (phase k-1's train-pair accuracy, which phase k-1 had no later stage to measure
			// unless it was evaluated). Member 0 does it once for the ensemble, into
			// phase-<k>/diagnostics; it touches neither the member nor any random stream, so the
			// training below is unchanged.
			fresh, err := e.FreshPairAccuracy(k)
			if err != nil {
				return err
			}
			prev, err := e.TrainPairAccuracy(k - 1)
			if err != nil {
				return err
			}
			r.FreshPairAccuracy, r.PrevTrainPairAccuracy = fresh.Accuracy, prev.Accuracy
			r.FreshLengthBalanced = fresh.LengthBalanced
		}
		if len(pairs) == 0 {
			r.Message = "no pairs in this phase (all ties or identical): member unchanged"
			return saveMember(dir, adapter, opt, e.Run.Seed, k)
		}
		P := int(e.Run.Spec.Budget.PairsPerStep)
		tr, err := model.NewTrainer(b.Weights, adapter.Rank, 2*P, pairsSeqLen(pairs), e.Run.objective())
		if err != nil {
			return err
		}
		params := map[string][]float64{}
		for name, t := range adapter.Tensors {
			params[name] = t.Data // the optimizer updates the adapter in place
		}
		grads := map[string][]float64{}
		var running float64
		epochs := int(e.Run.Spec.Budget.EpochsPerPhase)
		// Every epoch takes the steps the budget plans (pairs/F pairs per phase), whatever ties
		// and identical samples removed: batches wrap around the kept pairs. So every arm of a
		// comparison takes the same number of optimizer steps (TotalSteps), and the learning-rate
		// schedule ends where it is planned to.
		steps := (e.Run.PairsPerPhase() + P - 1) / P
		stage := fmt.Sprintf("%s/%d", v1alpha1.StageTrain, m)
		for ep := range epochs {
			// The same order for every member: members differ only by their adapters.
			order := rand.New(rand.NewPCG(e.streamSeed("order", k), uint64(ep))).Perm(len(pairs))
			for s := range steps {
				idx := make([]int, P)
				for i := range idx {
					idx[i] = order[(s*P+i)%len(order)] // batches past the kept pairs wrap around
				}
				batch, ref, err := pairBatch(pairs, idx, e.Run.LengthAlpha, e.Run.Beta)
				if err != nil {
					return err
				}
				out, err := tr.Step(adapter, batch, ref)
				if err != nil {
					return fmt.Errorf("step %d: %w", s, err)
				}
				for name, g := range out.Grads {
					grads[name] = g.Data
				}
				opt.Step(params, grads)
				r.Steps++
				// The running loss: an exponential moving average over about 10 steps, so the
				// live number is steady enough to read while the stage runs.
				if r.Steps == 1 {
					running = out.Loss
				} else {
					running = 0.9*running + 0.1*out.Loss
				}
				e.progressWith(stage, ep*steps+s+1, epochs*steps, map[string]float64{"loss": running})
			}
		}
		// Diagnostics of the trained member over all of the phase's pairs.
		pc, pr, cc, cr, err := e.policyLogps(tr, adapter, pairs, P)
		if err != nil {
			return err
		}
		rc, rr := make([]float64, len(pairs)), make([]float64, len(pairs))
		bl := make([]float64, 0, 2*len(pairs))
		for i, p := range pairs {
			rc[i], rr[i] = p.ReferenceLogps[0], p.ReferenceLogps[1]
			bl = append(bl, p.BehaviorLogps[0], p.BehaviorLogps[1])
		}
		// The loss as trained, the diagnostics on the plain implicit reward.
		lossV := e.Run.LossAsTrained(pc, pr, rc, rr, cc, cr)
		st := loss.Diagnostics(e.Run.Beta, pc, pr, rc, rr)
		// KL(behavior || policy) estimated on the behavior model's own samples; with the
		// BPO reference (behavior) this is exactly the KL to the reference.
		klRef := loss.KLEstimate(bl, interleave(pc, pr))
		r.Loss, r.RewardAccuracy, r.RewardMargin, r.KLToReference = &lossV, &st.Accuracy, &st.Margin, &klRef
		return saveMember(dir, adapter, opt, e.Run.Seed, k)
	})
}

// pairsSeqLen is the training graph's sequence length for the pairs: the longest prompt plus
// response among them.
func pairsSeqLen(pairs []Pair) int {
	n := 0
	for _, p := range pairs {
		n = max(n, len(p.PromptIDs)+len(p.ChosenIDs), len(p.PromptIDs)+len(p.RejectedIDs))
	}
	return n
}

func interleave(a, b []float64) []float64 {
	out := make([]float64, 0, len(a)+len(b))
	for i := range a {
		out = append(out, a[i], b[i])
	}
	return out
}

func perToken(v []float64, n []int) []float64 {
	out := make([]float64, len(v))
	for i := range v {
		out[i] = v[i] / float64(max(n[i], 1))
	}
	return out
}

// pairBatch lays out the pairs idx as the trainer's 2P sequences and the matching
// reference log-prob sums (chosen rows first), shifted by R-DPO's length term when
// lengthAlpha > 0 (loss.ShiftReference).
func pairBatch(pairs []Pair, idx []int, lengthAlpha, beta float64) (model.Batch, []float64, error) {
	P := len(idx)
	prompts, chosen, rejected := make([][]int, P), make([][]int, P), make([][]int, P)
	ref, lengths := make([]float64, 2*P), make([]int, 2*P)
	for i, j := range idx {
		p := pairs[j]
		prompts[i], chosen[i], rejected[i] = p.PromptIDs, p.ChosenIDs, p.RejectedIDs
		ref[i], ref[P+i] = p.ReferenceLogps[0], p.ReferenceLogps[1]
		lengths[i], lengths[P+i] = len(p.ChosenIDs), len(p.RejectedIDs)
	}
	b, err := model.PairBatch(prompts, chosen, rejected)
	return b, loss.ShiftReference(ref, lengths, lengthAlpha, beta), err
}

// policyLogps scores every pair under the adapter with the training graph (same numerics
// as the loss), returning chosen/rejected sums and token counts.
func (e *Env) policyLogps(tr *model.Trainer, a *model.Adapter, pairs []Pair, P int) (pc, pr []float64, cc, cr []int, err error) {
	n := len(pairs)
	pc, pr, cc, cr = make([]float64, n), make([]float64, n), make([]int, n), make([]int, n)
	for lo := 0; lo < n; lo += P {
		idx := make([]int, P)
		for i := range idx {
			idx[i] = min(lo+i, n-1) // pad the last batch by repeating the last pair
		}
		batch, _, err := pairBatch(pairs, idx, 0, 1)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		sums, counts, err := tr.LogProbs(a, batch)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		for i := 0; i < P && lo+i < n; i++ {
			pc[lo+i], pr[lo+i] = sums[i], sums[P+i]
			cc[lo+i], cr[lo+i] = counts[i], counts[P+i]
		}
	}
	return pc, pr, cc, cr, nil
}

// loadMember returns member m's adapter and optimizer after phase k (k = 0: initial).
func (e *Env) loadMember(k, m int) (*model.Adapter, *optim.AdamW, error) {
	b, err := e.LoadBase()
	if err != nil {
		return nil, nil, err
	}
	cfg := optim.DefaultConfig(e.Run.LR, e.Run.TotalSteps())
	cfg.MaxGradNorm = e.Run.MaxGradNorm
	opt, err := optim.New(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("spec.trainer: %w", err)
	}
	if k == 0 {
		return b.Init[m].Clone(), opt, nil
	}
	dir := e.WS.MemberDir(k, m)
	a, err := model.LoadAdapterFor(filepath.Join(dir, "adapter.safetensors"), b.Weights.Config)
	if err != nil {
		return nil, nil, err
	}
	st, err := loadOptimizer(filepath.Join(dir, "optimizer.safetensors"))
	if err != nil {
		return nil, nil, err
	}
	if err := opt.Restore(st); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, "optimizer.safetensors"), err)
	}
	return a, opt, nil
}

// memberRNG records the random state of a member's training. Batch orders are derived
// from (seed, phase, epoch), so the seed and the phase reached are the whole state.
type memberRNG struct {
	Seed  uint64 `json:"seed"`
	Phase int    `json:"phase"`
}

// saveMember writes the member's adapter, optimizer state (F64) and RNG record.
func saveMember(dir string, a *model.Adapter, opt *optim.AdamW, seed uint64, k int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := model.SaveAdapter(filepath.Join(dir, "adapter.safetensors"), a); err != nil {
		return err
	}
	st := opt.State()
	tensors := map[string]*model.Tensor{}
	for name, v := range st.M {
		tensors["m/"+name] = &model.Tensor{Shape: []int{len(v)}, Data: v}
		tensors["v/"+name] = &model.Tensor{Shape: []int{len(st.V[name])}, Data: st.V[name]}
	}
	meta := map[string]string{"step": strconv.Itoa(st.Step)}
	if err := model.SaveTensorsF64(filepath.Join(dir, "optimizer.safetensors"), tensors, meta); err != nil {
		return err
	}
	data, _ := json.Marshal(memberRNG{Seed: seed, Phase: k})
	return writeFileAtomic(filepath.Join(dir, "rng.json"), data)
}

func loadOptimizer(path string) (optim.State, error) {
	tensors, meta, err := model.LoadTensors(path)
	if err != nil {
		return optim.State{}, err
	}
	step, err := strconv.Atoi(meta["step"])
	if err != nil {
		return optim.State{}, fmt.Errorf("%s: __metadata__ step %q is not an integer", path, meta["step"])
	}
	st := optim.State{Step: step, M: map[string][]float64{}, V: map[string][]float64{}}
	for name, t := range tensors {
		switch {
		case strings.HasPrefix(name, "m/"):
			st.M[strings.TrimPrefix(name, "m/")] = t.Data
		case strings.HasPrefix(name, "v/"):
			st.V[strings.TrimPrefix(name, "v/")] = t.Data
		default:
			return optim.State{}, fmt.Errorf("%s: unexpected tensor %s in optimizer state", path, name)
		}
	}
	return st, nil
}
