package pretrain

import (
	"errors"
	"fmt"
	"math"

	"github.com/bpo-dev/bpo/trainer/model"
)

// memberSeed is the seed of SFT member m: its adapter's A and its data order.
func memberSeed(seed uint64, m int) uint64 {
	return seed*1_000_003 + uint64(m)*7919 + 17
}

// SFT trains `members` LoRA adapters (rank, alpha; on every LoRATargets projection) on base,
// frozen, each with its own seed for A's initialisation and for the data order (so the ensemble
// starts diverse). Each text is one sequence ending with EOT and every token after its first is
// predicted (packed rows, see the package comment); the held-out 2% is never trained on. With
// opt.Join > 1 each example is JoinTexts of the training texts (every member its own draw, keyed
// by its seed) and the held-out examples are joined among themselves (SFTHeldOut). The options'
// Layout is ignored and WeightDecay applies to A and B.
func SFT(base *model.Weights, texts []string, members int, rank int, alpha float64, opt SFTOptions) ([]*model.Adapter, error) {
	if base == nil {
		return nil, errors.New("sft: nil base model")
	}
	cfg := base.Config
	if err := checkModel(cfg, opt.tok()); err != nil {
		return nil, fmt.Errorf("sft: %w", err)
	}
	switch {
	case members <= 0:
		return nil, fmt.Errorf("sft: members must be > 0, got %d", members)
	case rank <= 0:
		return nil, fmt.Errorf("sft: rank must be > 0, got %d", rank)
	case !(alpha > 0) || math.IsInf(alpha, 0):
		return nil, fmt.Errorf("sft: alpha must be > 0, got %g", alpha)
	}
	if opt.Groups != nil && len(opt.Groups) != len(texts) {
		return nil, fmt.Errorf("sft: %d groups for %d texts", len(opt.Groups), len(texts))
	}
	o, err := opt.LMOptions.withDefaults(cfg.NPositions)
	if err != nil {
		return nil, fmt.Errorf("sft: %w", err)
	}
	o.Layout = LayoutPacked
	tok := o.tok()
	trIdx, _ := splitHeldOutIdx(texts)
	train, trainGroups := pick(texts, trIdx), pick(opt.Groups, trIdx)
	held := SFTHeldOut(texts, opt)
	if len(train) == 0 {
		return nil, errors.New("sft: no training text")
	}
	tr, err := model.NewLoRALMTrainer(base, rank, o.Batch, o.SeqLen, model.LMOptions{Packed: true})
	if err != nil {
		return nil, fmt.Errorf("sft: %w", err)
	}
	heldSet := newHeldOutSet(tok, held, o.SeqLen)
	out := make([]*model.Adapter, members)
	for m := range members {
		seed := memberSeed(o.Seed, m)
		a := model.NewAdapter(cfg, rank, alpha, int64(seed))
		params := make(map[string][]float64, len(a.Tensors))
		for n, t := range a.Tensors {
			params[n] = t.Data
		}
		r, err := newLMRun(o, tr, tr, a, params, newLMData(tok, JoinTexts(train, trainGroups, opt.Join, seed), o.SeqLen, LayoutPacked, seed), heldSet)
		if err != nil {
			return nil, fmt.Errorf("sft: %w", err)
		}
		r.member, r.members, r.progress = m, members, opt.Progress
		if err := r.run(); err != nil {
			return nil, fmt.Errorf("sft: member %d: %w", m, err)
		}
		out[m] = a
	}
	return out, nil
}

// SFTHeldOut is the held-out examples SFT reports its loss on: the held-out 2% of texts, joined
// among themselves as opt.Join and opt.Groups ask (with the seed opt.Seed), so that no held-out
// example contains a training text.
func SFTHeldOut(texts []string, opt SFTOptions) []string {
	_, idx := splitHeldOutIdx(texts)
	return JoinTexts(pick(texts, idx), pick(opt.Groups, idx), opt.Join, opt.Seed)
}
