package model

// The training graph: a GPT-2 decoder with LoRA on attn.c_attn, attn.c_proj, mlp.c_fc and
// mlp.c_proj, as a gorgonia graph in the Objective's Precision (float32 by default, float64 for
// checks) built once per (config, rank, batch, seqLen) and run by two precompiled TapeMachines
// (forward only; forward+backward).
//
// Layout: activations are [N, d] with N = batch·seqLen (row b·seqLen+t); linears are single
// [N,in]·[in,out] GEMMs; attention runs per (sequence, head) on [T,T] score blocks with the causal
// mask applied as -Inf (probability exactly 0) above the diagonal; the output projection is tied
// to wte. Base weights are constants captured by the ops (never differentiated); the adapter
// tensors are graph inputs whose values are copied in per call; reference log-probs are inputs.
// Layers are fused gorgonia ops (graph_op_*.go, one per layer) over the kernels of
// trainer/model/kernels (the ones inference runs too), whose gradients are checked against finite
// differences layer by layer and end to end (gradcheck_test.go) and against an independent
// PyTorch GPT-2 (golden_test.go); float32 against float64 in precision_test.go.
//
// gorgonia v0.9.18 defects met here (probed in graph_gorgonia_test.go) and how this file avoids
// them:
//   - RunAll on a machine that has run already does nothing until Reset: every run is
//     RunAll + Reset (runVM).
//   - Reset drops every register, so each run re-allocates every op output: the ops here own their
//     output buffers and reuse them.
//   - A node's Value() after the run can have been overwritten in place by a later op the compiler
//     marked unsafe (e.g. HadamardDiv over the per-sequence sums): every node whose value is read
//     back (sums, logits, loss, gradients) is consumed only by ops of this package.
//   - InverseSqrt's gradient is wrong: LayerNorm is one fused op (1/sqrt in Go).
//   - Compile(g) also executes the "stray" gradient nodes SymDiff creates for inputs nobody asked
//     for; CompileFunction over the wanted outputs prunes them.

import (
	"errors"
	"fmt"
	"sort"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// Batch is a padded batch of token sequences.
//
// Tokens[b] is sequence b (at most the trainer's seqLen tokens; shorter rows are padded, and padding
// never influences any logit of a real position because attention is causal). Mask[b][t] is true
// when token t of sequence b is a response token: its log-prob, read from the logits at t-1, counts
// in the sequence log-prob. Mask[b] may be shorter than Tokens[b] (missing entries are false);
// Mask[b][0] must be false (nothing predicts the first token).
type Batch struct {
	Tokens [][]int
	Mask   [][]bool
}

// PairBatch lays out P preference pairs as a 2P-sequence Batch: rows [0,P) are prompt+chosen,
// rows [P,2P) are prompt+rejected, with the response tokens masked in. This is the layout Step
// expects.
func PairBatch(prompts, chosen, rejected [][]int) (Batch, error) {
	P := len(prompts)
	if len(chosen) != P || len(rejected) != P {
		return Batch{}, fmt.Errorf("pair batch: %d prompts, %d chosen, %d rejected", P, len(chosen), len(rejected))
	}
	b := Batch{Tokens: make([][]int, 2*P), Mask: make([][]bool, 2*P)}
	for side, resp := range [][][]int{chosen, rejected} {
		for i := range P {
			toks := append(append([]int(nil), prompts[i]...), resp[i]...)
			m := make([]bool, len(toks))
			for t := len(prompts[i]); t < len(toks); t++ {
				m[t] = t > 0
			}
			b.Tokens[side*P+i], b.Mask[side*P+i] = toks, m
		}
	}
	return b, nil
}

// LossFunc builds the scalar preference loss from [P]-vector nodes: policy log-probs of the chosen
// (pc) and rejected (pr) responses and the reference log-probs rc, rr (constants, no gradient).
// trainer/loss.Node plugs in as
//
//	func(pc, pr, rc, rr *gorgonia.Node) (*gorgonia.Node, error) { return loss.Node("DPO", beta, pc, pr, rc, rr) }
type LossFunc func(pc, pr, rc, rr *G.Node) (*G.Node, error)

// Objective is the preference objective of a Trainer.
type Objective struct {
	Loss LossFunc
	// LengthNormalize feeds the loss per-token mean log-probs (sum/count, policy and reference)
	// instead of sums: IPO with loss.ipoLengthNormalize (TRL convention).
	LengthNormalize bool
	// Precision is the dtype the graph computes in (zero value: Float32).
	Precision Precision
}

// StepOutput is the result of one forward+backward pass.
type StepOutput struct {
	Loss float64
	// Grads holds d loss / d tensor for every adapter tensor, under the Adapter.Tensors names.
	Grads map[string]*Tensor
	// LogProbs are the policy's per-sequence response log-prob sums, Counts the response token
	// counts, in batch order (chosen rows first).
	LogProbs []float64
	Counts   []int
}

// Trainer is the training graph for one (config, LoRA rank, batch size, sequence length): built
// once by NewTrainer and reused by every Step. A Trainer is not safe for concurrent use.
type Trainer struct {
	cfg             Config
	rank            int
	batch, seqLen   int
	lengthNormalize bool
	precision       Precision
	scale           float64 // alpha/r of the adapter bound by the current call, 0 = base model

	g *G.ExprGraph
	grBatchInputs
	ref, cnt       *G.Node
	refV, cntV     *tensor.Dense
	grTrained      // the adapter tensors
	grads          []*G.Node
	logits, sums   *G.Node
	loss           *G.Node
	trainVM, fwdVM G.VM
	counts         []int
}

// ErrNoLoss is returned by Step when the Trainer was built without a loss.
var ErrNoLoss = errors.New("model: trainer has no loss function (Objective.Loss is nil)")

// NewTrainer builds the training graph for base (frozen; its tensors are referenced, not copied,
// and must not change while the Trainer is in use), LoRA rank, batch sequences of seqLen tokens and
// the objective. With a nil objective.Loss only LogProbs and Logits are available; otherwise batch
// must be even (P chosen rows, then P rejected rows).
func NewTrainer(base *Weights, rank int, batch, seqLen int, objective Objective) (*Trainer, error) {
	if base == nil {
		return nil, errors.New("model: nil base weights")
	}
	cfg := base.Config
	if rank <= 0 {
		return nil, fmt.Errorf("model: LoRA rank must be > 0, got %d", rank)
	}
	if err := grCheckGraph(cfg, batch, seqLen); err != nil {
		return nil, err
	}
	if err := checkTrainerMemory(cfg, batch, seqLen, rank, objective.Precision); err != nil {
		return nil, err
	}
	if objective.Loss != nil && batch%2 != 0 {
		return nil, fmt.Errorf("model: a preference batch needs an even number of sequences, got %d", batch)
	}
	if err := objective.Precision.Validate(); err != nil {
		return nil, err
	}
	tr := &Trainer{cfg: cfg, rank: rank, batch: batch, seqLen: seqLen, lengthNormalize: objective.LengthNormalize,
		precision: objective.Precision.orDefault()}
	var err error
	if tr.precision == Float64 {
		err = buildTrainer[float64](tr, base, objective)
	} else {
		err = buildTrainer[float32](tr, base, objective)
	}
	if err != nil {
		return nil, err
	}
	return tr, nil
}

// buildTrainer builds the preference graph in precision F.
func buildTrainer[F kernels.Float](tr *Trainer, base *Weights, objective Objective) error {
	batch, seqLen, rank := tr.batch, tr.seqLen, tr.rank
	N := batch * seqLen
	gb := grNewBuilder[F](base, "base weights", false, rank, &tr.scale)
	tr.g = gb.g
	tr.grBatchInputs = gb.batchInputs(N, "response_mask")
	x, wte, err := gb.decoder(tr.tok, nil, nil, batch, seqLen, gb.frozenLayerNorm, gb.loraLinear)
	if err != nil {
		return err
	}
	tr.grTrained = gb.grTrained
	if tr.logits, err = grTiedLogitsOp[F](x, wte); err != nil {
		return err
	}
	if tr.sums, err = grSeqLogProbOp[F](tr.logits, tr.tgt, tr.wt, batch); err != nil {
		return err
	}

	fwdIn := append(G.Nodes{tr.tok, tr.tgt, tr.wt}, gb.inputs...) // wte, wpe, the adapter
	if tr.fwdVM, err = grCompileVM(tr.g, fwdIn, G.Nodes{tr.logits, tr.sums}, "forward"); err != nil {
		return err
	}

	if objective.Loss == nil {
		return nil
	}
	P := batch / 2
	tr.ref, tr.refV = gb.vec("reference_logps", batch)
	tr.cnt, tr.cntV = gb.vec("response_counts", batch)
	pol := tr.sums
	if objective.LengthNormalize {
		if pol, err = grPerTokenOp(tr.sums, tr.cnt); err != nil {
			return err
		}
	}
	pc, err := grRangeOp(pol, 0, P)
	if err != nil {
		return err
	}
	pr, err := grRangeOp(pol, P, 2*P)
	if err != nil {
		return err
	}
	rc, err := grRangeOp(tr.ref, 0, P)
	if err != nil {
		return err
	}
	rr, err := grRangeOp(tr.ref, P, 2*P)
	if err != nil {
		return err
	}
	if tr.loss, err = objective.Loss(pc, pr, rc, rr); err != nil {
		return fmt.Errorf("model: building the loss: %w", err)
	}
	if !tr.loss.IsScalar() {
		return fmt.Errorf("model: the loss must be a scalar, got shape %v", tr.loss.Shape())
	}
	if tr.grads, err = G.Grad(tr.loss, tr.params...); err != nil {
		return fmt.Errorf("model: differentiating the loss: %w", err)
	}
	trainIn := append(append(G.Nodes{}, fwdIn...), tr.ref)
	if objective.LengthNormalize {
		trainIn = append(trainIn, tr.cnt)
	}
	outs := append(G.Nodes{tr.loss, tr.sums}, tr.grads...)
	if tr.trainVM, err = grCompileVM(tr.g, trainIn, outs, "training"); err != nil {
		return err
	}
	return nil
}

// AdapterNames returns the names of the adapter tensors the graph trains, sorted.
func (t *Trainer) AdapterNames() []string {
	n := append([]string(nil), t.names...)
	sort.Strings(n)
	return n
}

// bindAdapter copies the adapter into the graph's parameter tensors; nil means the base model.
func (t *Trainer) bindAdapter(a *Adapter) error {
	if a == nil {
		t.scale = 0
		return nil
	}
	s, err := t.copyAdapter(a, t.rank)
	if err != nil {
		return err
	}
	t.scale = s
	return nil
}

// bindBatch fills tokens, shifted targets and weights; it returns the response counts.
func (t *Trainer) bindBatch(b Batch) ([]int, error) {
	if cap(t.counts) < t.batch {
		t.counts = make([]int, t.batch)
	}
	counts := t.counts[:t.batch]
	if _, err := t.fill(b, t.batch, t.seqLen, t.cfg.VocabSize, counts); err != nil {
		return nil, err
	}
	return counts, nil
}

// LogProbs runs the forward pass only and returns per-sequence response log-prob sums and token
// counts. A nil adapter scores the base model.
func (t *Trainer) LogProbs(a *Adapter, b Batch) (sums []float64, counts []int, err error) {
	if err := t.bindAdapter(a); err != nil {
		return nil, nil, err
	}
	c, err := t.bindBatch(b)
	if err != nil {
		return nil, nil, err
	}
	if err := grRunVM(t.fwdVM); err != nil {
		return nil, nil, fmt.Errorf("model: forward pass: %w", err)
	}
	return append([]float64(nil), grF64s(t.sums.Value().(*tensor.Dense))...), append([]int(nil), c...), nil
}

// Logits runs the forward pass and returns the full logits [batch, seqLen, vocab] (padding
// positions included). A nil adapter means the base model.
func (t *Trainer) Logits(a *Adapter, b Batch) (*Tensor, error) {
	if err := t.bindAdapter(a); err != nil {
		return nil, err
	}
	if _, err := t.bindBatch(b); err != nil {
		return nil, err
	}
	if err := grRunVM(t.fwdVM); err != nil {
		return nil, fmt.Errorf("model: forward pass: %w", err)
	}
	out := NewTensor(t.batch, t.seqLen, t.cfg.VocabSize)
	grTo64(out.Data, t.logits.Value().(*tensor.Dense))
	return out, nil
}

// Step binds the adapter (the policy) and a preference batch (P chosen rows, then P rejected rows,
// see PairBatch), with refLogProbs the reference model's per-sequence response log-prob sums in the
// same order (precomputed, e.g. by LogProbs with the reference adapter; with LengthNormalize they
// are divided by the response counts here). It runs forward+backward and returns the loss, the
// gradient of every adapter tensor and the policy's log-prob sums and counts.
func (t *Trainer) Step(a *Adapter, b Batch, refLogProbs []float64) (StepOutput, error) {
	if t.trainVM == nil {
		return StepOutput{}, ErrNoLoss
	}
	if a == nil {
		return StepOutput{}, errors.New("model: Step needs an adapter")
	}
	if len(refLogProbs) != t.batch {
		return StepOutput{}, fmt.Errorf("model: %d reference log-probs for %d sequences", len(refLogProbs), t.batch)
	}
	if err := t.bindAdapter(a); err != nil {
		return StepOutput{}, err
	}
	counts, err := t.bindBatch(b)
	if err != nil {
		return StepOutput{}, err
	}
	ref, cnt := grF64s(t.refV), grF64s(t.cntV)
	for i, r := range refLogProbs {
		cnt[i] = float64(counts[i])
		ref[i] = r
		if t.lengthNormalize {
			if counts[i] == 0 {
				return StepOutput{}, fmt.Errorf("model: sequence %d has no response tokens (length-normalised loss)", i)
			}
			ref[i] = r / float64(counts[i])
		}
	}
	if err := grRunVM(t.trainVM); err != nil {
		return StepOutput{}, fmt.Errorf("model: training step: %w", err)
	}
	return StepOutput{
		Loss:     grScalarValue(t.loss.Value()),
		Grads:    t.gradTensors(t.grads),
		LogProbs: append([]float64(nil), grF64s(t.sums.Value().(*tensor.Dense))...),
		Counts:   append([]int(nil), counts...),
	}, nil
}
