package pretrain

import (
	"fmt"
	"math"
	"time"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/optim"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// lmRun is one training run (pretraining, or one SFT member): the loop of steps, held-out
// evaluations, checkpoints and progress reports.
type lmRun struct {
	o        LMOptions
	tr       *model.LMTrainer
	evalTr   *model.LMTrainer // packed: the held-out measure scores every document alone
	adapter  *model.Adapter   // LoRA mode
	params   map[string][]float64
	opt      *optim.AdamW
	data     *lmData
	held     heldOutSet
	member   int
	members  int
	progress func(LMProgress) error

	step   int
	tokens int64
	curve  []HeldOutPoint
	losses []float64
	start  time.Time
	// checkpoint is called after a step when it returns true for the step (pretraining).
	checkpoint func(step int) (bool, error)
}

// newLMRun sets up a run of tr (adapter a in LoRA mode, nil in full mode) with a fresh
// optimizer over params.
func newLMRun(o LMOptions, tr, evalTr *model.LMTrainer, a *model.Adapter, params map[string][]float64, data *lmData, held heldOutSet) (*lmRun, error) {
	opt, err := optim.New(o.optimConfig())
	if err != nil {
		return nil, err
	}
	return &lmRun{o: o, tr: tr, evalTr: evalTr, adapter: a, params: params, opt: opt, data: data, held: held, members: 1}, nil
}

// run trains from r.step to o.Steps.
func (r *lmRun) run() error {
	r.start = time.Now()
	grads := make(map[string][]float64, len(r.params))
	for r.step < r.o.Steps {
		b := r.data.batch(r.o.Batch)
		out, err := r.tr.Step(r.adapter, b)
		if err != nil {
			return err
		}
		if math.IsNaN(out.Loss) || math.IsInf(out.Loss, 0) {
			return fmt.Errorf("step %d: loss is %g", r.step+1, out.Loss)
		}
		clear(grads)
		for n, g := range out.Grads {
			grads[n] = g.Data
		}
		norm, lr := r.opt.Step(r.params, grads)
		r.step++
		r.tokens += int64(out.Tokens)
		r.losses = append(r.losses, out.Loss)
		p := LMProgress{Member: r.member, Members: r.members, Step: r.step, Steps: r.o.Steps, Loss: out.Loss, LR: lr,
			GradNorm: norm, Tokens: r.tokens, StepTokens: out.Tokens, Elapsed: time.Since(r.start)}
		if r.step == r.o.Steps || (r.o.EvalEvery > 0 && r.step%r.o.EvalEvery == 0) {
			h, err := r.held.natsPerByte(r.evalTr, r.adapter)
			if err != nil {
				return err
			}
			p.Evaluated, p.HeldOut = true, h
			r.curve = append(r.curve, HeldOutPoint{Step: r.step, NatsPerByte: h})
		}
		if r.checkpoint != nil {
			if p.Checkpointed, err = r.checkpoint(r.step); err != nil {
				return err
			}
		}
		if r.progress != nil {
			if err := r.progress(p); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *lmRun) trainLoss() float64 {
	n := min(len(r.losses), 50)
	if n == 0 {
		return math.NaN()
	}
	var s float64
	for _, l := range r.losses[len(r.losses)-n:] {
		s += l
	}
	return s / float64(n)
}

// checkModel checks that cfg fits the tokenizer: every id in the vocabulary, EOT the eos token.
func checkModel(cfg model.Config, tok tokenizer.Tokenizer) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.VocabSize < tok.VocabSize() || cfg.EOSTokenID != tok.EOT() {
		return fmt.Errorf("the tokenizer needs vocab_size >= %d and eos_token_id %d, got %d and %d",
			tok.VocabSize(), tok.EOT(), cfg.VocabSize, cfg.EOSTokenID)
	}
	return nil
}
