package model

// The language-model training graph: the same decoder as graph.go, trained on the mean
// next-token negative log-likelihood of the masked tokens of a Batch, in one of two modes:
//
//   - full-parameter (NewLMTrainer): every base tensor is a graph input with a gradient
//     (wte through both the embedding lookup and the tied output projection, wpe, every
//     LayerNorm gain and bias, every Conv1D weight and bias), for pretraining;
//   - LoRA (NewLoRALMTrainer): the base is frozen exactly as in the preference graph (the same
//     fused ops) and only an Adapter's tensors get gradients, for SFT adapters.
//
// The full-parameter mode uses the op variants with weight inputs (grLayerNormFullOp,
// grLinearFullOp, grTiedLogitsFullOp) and the shared embedding, attention and GELU ops. In float32
// the graph's weight inputs are converted copies of the float64 weights, refreshed before every
// call, so an optimizer keeps updating the weights' own (master) data in place.

import (
	"errors"
	"fmt"
	"sort"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// LMStepOutput is the result of one LMTrainer forward+backward pass.
type LMStepOutput struct {
	// Loss is the mean negative log-likelihood (nats) of the masked tokens, 0 if none is masked.
	Loss float64
	// Tokens is the number of masked (predicted) tokens.
	Tokens int
	// Grads holds d Loss / d tensor under the tensor names: every base tensor (full mode) or
	// every adapter tensor (LoRA mode).
	Grads map[string]*Tensor
}

// LMOptions configure an LMTrainer.
type LMOptions struct {
	// Packed lets a row hold several documents: a new document starts after every end-of-text
	// token (Config.EOSTokenID) of a row, with positions restarting at 0 and attention confined to
	// the document, so each document is scored exactly as if it were alone at the start of a row
	// (how inference sees a prompt). A token that starts a document cannot be masked.
	Packed bool
	// Precision is the dtype the graph computes in (zero value: Float32).
	Precision Precision
}

// LMTrainer is the language-model training graph for one (config, mode, batch size, sequence
// length), built once and reused by every Step. It is not safe for concurrent use.
type LMTrainer struct {
	cfg           Config
	packed        bool
	full          bool
	rank          int
	batch, seqLen int
	scale         float64 // LoRA mode: alpha/r of the bound adapter, 0 = base model
	precision     Precision
	syncs         []grSync    // float32: graph inputs refreshed from the weights before every run
	masters       [][]float64 // full mode: each trained tensor's Data when the graph was built

	g *G.ExprGraph
	grBatchInputs
	posV, startV   *tensor.Dense // packed rows: position ids and document starts
	grTrained                    // full mode: values are views on the Weights' data
	weights        *Weights      // full mode
	grads          []*G.Node
	loss           *G.Node
	trainVM, fwdVM G.VM
	count          int
}

// NewLMTrainer builds the full-parameter language-model graph for w. The graph reads w's
// tensors in place (it keeps views on their Data): update them in place between steps (e.g.
// with optim.AdamW on Params) and the next Step sees the new values; do not replace them.
func NewLMTrainer(w *Weights, batch, seqLen int, opt LMOptions) (*LMTrainer, error) {
	return newLMTrainer(w, 0, batch, seqLen, true, opt)
}

// NewLoRALMTrainer builds the LoRA language-model graph: base is frozen (referenced, not
// copied; it must not change while the trainer is in use) and Step differentiates the adapter
// of the given rank.
func NewLoRALMTrainer(base *Weights, rank, batch, seqLen int, opt LMOptions) (*LMTrainer, error) {
	if rank <= 0 {
		return nil, fmt.Errorf("model: LoRA rank must be > 0, got %d", rank)
	}
	return newLMTrainer(base, rank, batch, seqLen, false, opt)
}

func newLMTrainer(w *Weights, rank, batch, seqLen int, full bool, opt LMOptions) (*LMTrainer, error) {
	if w == nil {
		return nil, errors.New("model: nil weights")
	}
	cfg := w.Config
	if err := grCheckGraph(cfg, batch, seqLen); err != nil {
		return nil, err
	}
	if err := checkTrainerMemory(cfg, batch, seqLen, rank, opt.Precision); err != nil {
		return nil, err
	}
	if err := opt.Precision.Validate(); err != nil {
		return nil, err
	}
	tr := &LMTrainer{cfg: cfg, packed: opt.Packed, full: full, rank: rank, batch: batch, seqLen: seqLen,
		precision: opt.Precision.orDefault()}
	if full {
		tr.weights = w
	}
	var err error
	if tr.precision == Float64 {
		err = buildLMTrainer[float64](tr, w)
	} else {
		err = buildLMTrainer[float32](tr, w)
	}
	if err != nil {
		return nil, err
	}
	return tr, nil
}

// buildLMTrainer builds the language-model graph in precision F.
func buildLMTrainer[F kernels.Float](tr *LMTrainer, w *Weights) error {
	cfg, full, batch, seqLen := tr.cfg, tr.full, tr.batch, tr.seqLen
	d, N := cfg.NEmbd, batch*seqLen
	gb := grNewBuilder[F](w, "weights", full, tr.rank, &tr.scale)
	tr.g = gb.g
	tr.grBatchInputs = gb.batchInputs(N, "loss_mask")
	var pos, start *G.Node // nil unless packed
	dataIn := G.Nodes{tr.tok, tr.tgt, tr.wt}
	if tr.packed {
		pos, tr.posV = gb.vec("positions", N)
		start, tr.startV = gb.vec("document_starts", N)
		dataIn = append(dataIn, pos, start)
	}

	ln, linear := gb.frozenLayerNorm, gb.loraLinear
	if full {
		ln = func(x *G.Node, prefix string) (*G.Node, error) {
			gn, err := gb.input(prefix+".weight", d)
			if err != nil {
				return nil, err
			}
			bn, err := gb.input(prefix+".bias", d)
			if err != nil {
				return nil, err
			}
			return grLayerNormFullOp[F](x, gn, bn, cfg.LayerNormEpsilon)
		}
		linear = func(x *G.Node, prefix string, in, out int) (*G.Node, error) {
			wn, err := gb.input(prefix+".weight", in, out)
			if err != nil {
				return nil, err
			}
			bn, err := gb.input(prefix+".bias", out)
			if err != nil {
				return nil, err
			}
			return grLinearFullOp[F](x, wn, bn)
		}
	}
	x, wte, err := gb.decoder(tr.tok, pos, start, batch, seqLen, ln, linear)
	if err != nil {
		return err
	}
	tr.grTrained = gb.grTrained
	tr.syncs = gb.syncs
	if full {
		for _, name := range tr.names {
			tr.masters = append(tr.masters, w.Tensors[name].Data)
		}
	}
	var logits *G.Node
	if full {
		logits, err = grTiedLogitsFullOp[F](x, wte)
	} else {
		logits, err = grTiedLogitsOp[F](x, wte)
	}
	if err != nil {
		return err
	}
	if tr.loss, err = grLMLossOp[F](logits, tr.tgt, tr.wt); err != nil {
		return err
	}
	if full {
		if err := checkAllParams(cfg, tr.names); err != nil {
			return err
		}
	}

	allIn := append(dataIn, gb.inputs...)
	if tr.fwdVM, err = grCompileVM(tr.g, allIn, G.Nodes{tr.loss}, "LM forward"); err != nil {
		return err
	}
	if tr.grads, err = G.Grad(tr.loss, tr.params...); err != nil {
		return fmt.Errorf("model: differentiating the LM loss: %w", err)
	}
	if tr.trainVM, err = grCompileVM(tr.g, allIn, append(G.Nodes{tr.loss}, tr.grads...), "LM training"); err != nil {
		return err
	}
	return nil
}

// checkAllParams reports a base tensor the full-parameter graph does not train.
func checkAllParams(cfg Config, names []string) error {
	got := map[string]bool{}
	for _, n := range names {
		got[n] = true
	}
	for _, n := range cfg.ParamNames() {
		if !got[n] {
			return fmt.Errorf("model: the LM graph does not train %q", n)
		}
	}
	return nil
}

// Full reports whether the trainer differentiates every base tensor (else: an adapter).
func (t *LMTrainer) Full() bool { return t.full }

// Batch and SeqLen are the shape the graph was built for.
func (t *LMTrainer) Batch() int  { return t.batch }
func (t *LMTrainer) SeqLen() int { return t.seqLen }

// ParamNames returns the names of the trained tensors (base tensors or adapter tensors), sorted.
func (t *LMTrainer) ParamNames() []string {
	n := append([]string(nil), t.names...)
	sort.Strings(n)
	return n
}

// Params returns the trained base tensors' data by name (full mode; nil in LoRA mode): the
// weights' own float64 slices, for an optimizer to update in place. The graph reads them at every
// call (in float32, by converting them into its inputs first).
func (t *LMTrainer) Params() map[string][]float64 {
	if !t.full {
		return nil
	}
	out := make(map[string][]float64, len(t.names))
	for _, n := range t.names {
		out[n] = t.weights.Tensors[n].Data
	}
	return out
}

func (t *LMTrainer) bind(a *Adapter, b Batch) error {
	if t.full {
		if a != nil {
			return errors.New("model: a full-parameter LM trainer takes no adapter")
		}
		for i, name := range t.names {
			// The weights must still be the tensors the graph views.
			if tt, m := t.weights.Tensors[name], t.masters[i]; tt == nil || len(tt.Data) == 0 || len(m) == 0 || &tt.Data[0] != &m[0] {
				return fmt.Errorf("model: weights tensor %q was replaced after NewLMTrainer; update it in place", name)
			}
		}
		grSyncInputs(t.syncs)
	} else if a == nil {
		t.scale = 0
	} else {
		s, err := t.copyAdapter(a, t.rank)
		if err != nil {
			return err
		}
		t.scale = s
	}
	n, err := t.fill(b, t.batch, t.seqLen, t.cfg.VocabSize, nil)
	t.count = n
	if err != nil || !t.packed {
		return err
	}
	return bindDocuments(b, t.seqLen, t.cfg.EOSTokenID, grF64s(t.posV), grF64s(t.startV))
}

// bindDocuments fills the position ids and document starts of packed rows: a document starts at
// the beginning of a row and after every eot token.
func bindDocuments(b Batch, T, eot int, pos, start []float64) error {
	for i := range b.Tokens {
		s := 0
		for t := 0; t < T; t++ {
			pos[i*T+t], start[i*T+t] = float64(t-s), float64(s)
			if t < len(b.Mask[i]) && b.Mask[i][t] && t == s {
				return fmt.Errorf("model: mask[%d][%d] is set, but the token starts a packed document (nothing predicts it)", i, t)
			}
			if t < len(b.Tokens[i]) && b.Tokens[i][t] == eot {
				s = t + 1
			}
		}
	}
	return nil
}

// Loss runs the forward pass only and returns the mean NLL of the masked tokens and their
// number. a is the adapter in LoRA mode (nil = the base model) and must be nil in full mode.
func (t *LMTrainer) Loss(a *Adapter, b Batch) (float64, int, error) {
	if err := t.bind(a, b); err != nil {
		return 0, 0, err
	}
	if err := grRunVM(t.fwdVM); err != nil {
		return 0, 0, fmt.Errorf("model: LM forward pass: %w", err)
	}
	return grScalarValue(t.loss.Value()), t.count, nil
}

// Step runs forward+backward and returns the loss and the gradient of every trained tensor. In
// LoRA mode a is the adapter being trained (required); in full mode a must be nil and the
// gradients are those of the weights given to NewLMTrainer.
func (t *LMTrainer) Step(a *Adapter, b Batch) (LMStepOutput, error) {
	if !t.full && a == nil {
		return LMStepOutput{}, errors.New("model: a LoRA LM Step needs an adapter")
	}
	if err := t.bind(a, b); err != nil {
		return LMStepOutput{}, err
	}
	if err := grRunVM(t.trainVM); err != nil {
		return LMStepOutput{}, fmt.Errorf("model: LM training step: %w", err)
	}
	return LMStepOutput{Loss: grScalarValue(t.loss.Value()), Tokens: t.count, Grads: t.gradTensors(t.grads)}, nil
}
