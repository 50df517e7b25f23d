package pipeline

// Building a base model folder: byte-level language-model pretraining (every base tensor) and the
// SFT LoRA adapters that initialise the ensemble members. `bpo pretrain` and `bpo sft` run these;
// trainer/task/models/tiny-reviews is their output (see the Makefile target `models`).
//
// Data. Every text is one document: its bytes followed by end-of-text (EOT). A document longer
// than the sequence length T is cut into pieces of T tokens that overlap by one token (the first
// token of a piece is context only), so every token after a document's first is predicted exactly
// once per pass. Layout "packed" (the default) places whole pieces into rows of T tokens by
// first fit, several per row, and trains with model.LMOptions{Packed: true}: positions restart and
// attention stops at every document, so each document is seen exactly as inference sees a prompt
// (alone, at position 0) while the rows are almost full. Layout "stream" is GPT-2's: the
// documents, each followed by EOT, are concatenated and cut into windows of T tokens (stride
// T-1), attention crossing documents. Both are reshuffled every epoch from (seed, epoch).
//
// Held-out loss. A deterministic 2% of the texts (FNV-1a hash of the text mod 50 == 0; the text
// with the smallest hash if none is) is never trained on. Its loss is reported in nats per byte:
// the summed negative log-likelihood of every held-out document's bytes after the first and of
// its closing EOT (as many predictions as the document has bytes), divided by its bytes.
//
// Determinism. All randomness comes from the seed (weights: model.Init; data order: PCG streams
// keyed by seed and epoch), every kernel reduces in a fixed order (gonum's GEMM partitions by
// block, not by thread count), so a run is bit-identical for a given command whatever
// GOMAXPROCS is. A checkpoint holds the weights and the AdamW moments in F64 and the step count,
// which is the whole training state: a resumed run continues bit-identically.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/optim"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// Data layouts of PretrainOptions.Layout.
const (
	LayoutPacked = "packed"
	LayoutStream = "stream"
)

// LR schedules after warm-up.
const (
	ScheduleCosine = "cosine"
	ScheduleLinear = "linear"
)

// LMOptions are the optimisation settings shared by Pretrain and SFT. Zero values take the
// defaults noted (WeightDecay 0 means none).
type LMOptions struct {
	// Steps is the number of optimizer steps (required; per member for SFT).
	Steps int
	// Batch is the number of rows of SeqLen tokens per step (default 16).
	Batch int
	// SeqLen is the row length (default and maximum: the model's n_positions).
	SeqLen int
	// LR is the peak learning rate (default 1e-3).
	LR float64
	// MinLRRatio is the final learning rate as a fraction of LR (default 0.1; negative: 0).
	MinLRRatio float64
	// Warmup steps ramp the rate linearly up to LR (default Steps/20, at most 200; negative: none).
	Warmup int
	// Schedule is the decay from LR to MinLRRatio·LR over the steps after warm-up: "cosine"
	// (default) or "linear".
	Schedule string
	// WeightDecay is AdamW's decoupled decay, applied to matrices (Conv1D weights, wte, wpe;
	// LoRA A and B) but not to biases and LayerNorm parameters.
	WeightDecay float64
	// MaxGradNorm clips the global gradient norm (default 1; negative: no clipping).
	MaxGradNorm float64
	// Seed fixes the initial weights (Pretrain), the adapters' A (SFT) and the data order.
	Seed uint64
	// Layout is "packed" (default) or "stream", see the file comment. SFT always packs.
	Layout string
	// EvalEvery is the held-out evaluation period in steps (default Steps/10; negative: only at
	// the end). The last step is always evaluated.
	EvalEvery int
}

// PretrainOptions configure Pretrain.
type PretrainOptions struct {
	LMOptions
	// CheckpointDir, when set, holds the checkpoint (pretrain.ckpt.safetensors), written
	// atomically every CheckpointEvery steps (default 200) and after the last step. A run
	// whose CheckpointDir holds a checkpoint of the same pretraining (same config, options
	// and texts) resumes from it; one of a different pretraining is an error.
	CheckpointDir   string
	CheckpointEvery int
	// Progress, when set, is called after every step; an error stops the run (as a crash
	// would: nothing is written) and is returned.
	Progress func(LMProgress) error
}

// SFTOptions configure SFT.
type SFTOptions struct {
	LMOptions
	// Progress, when set, is called after every step of every member; an error stops SFT.
	Progress func(LMProgress) error
}

// LMProgress reports one optimizer step.
type LMProgress struct {
	// Member is the SFT member being trained (0 for pretraining), Members their number.
	Member, Members int
	Step, Steps     int // steps done, total
	// Loss is the step's mean NLL per predicted token (nats).
	Loss, LR, GradNorm float64
	// Tokens is the number of predicted tokens trained on so far (this member), StepTokens
	// those of this step.
	Tokens     int64
	StepTokens int
	Elapsed    time.Duration // since this process started the run (or member)
	// Evaluated is set when HeldOut (nats/byte) was measured after this step.
	Evaluated bool
	HeldOut   float64
	// Checkpointed is set when a checkpoint was written after this step.
	Checkpointed bool
}

// HeldOutPoint is one held-out evaluation.
type HeldOutPoint struct {
	Step        int     `json:"step"`
	NatsPerByte float64 `json:"natsPerByte"`
}

// PretrainReport summarises a pretraining.
type PretrainReport struct {
	Params                   int
	TrainDocs, HeldOutDocs   int
	TrainBytes, HeldOutBytes int
	// RowsPerEpoch and Fill describe the first epoch's layout: rows of SeqLen tokens and the
	// fraction of their positions holding a document token.
	RowsPerEpoch int
	Fill         float64
	Steps        int
	// ResumedFrom is the step the run resumed from (0: a fresh start).
	ResumedFrom int
	// Tokens is the number of predicted tokens trained on (all steps, resumed ones included).
	Tokens int64
	// TrainLoss is the mean training loss (nats/token) of the last 50 steps run by this process.
	TrainLoss float64
	// HeldOut is the final held-out loss in nats per byte; Curve every evaluation.
	HeldOut float64
	Curve   []HeldOutPoint
	// Elapsed is the wall time of this process's part of the run.
	Elapsed time.Duration
}

// ---------- data ----------

// lmPiece is a document or a piece of one: its tokens; the first is never predicted. final is
// false for a non-final piece of a long document (it does not end with EOT).
type lmPiece struct {
	toks  []int
	final bool
}

// lmRow is one training row.
type lmRow struct {
	toks []int
	mask []bool
}

// splitHeldOut returns the training and held-out texts (see the file comment).
func splitHeldOut(texts []string) (train, held []string) {
	best, bestH := -1, uint64(math.MaxUint64)
	for i, t := range texts {
		h := fnv.New64a()
		h.Write([]byte(t))
		s := h.Sum64()
		if s%50 == 0 {
			held = append(held, t)
		} else {
			train = append(train, t)
		}
		if s < bestH {
			best, bestH = i, s
		}
	}
	if len(held) == 0 && len(texts) > 1 {
		held = []string{texts[best]}
		train = append(append([]string(nil), texts[:best]...), texts[best+1:]...)
	}
	return train, held
}

// SplitHeldOut is the deterministic 2% held-out split of Pretrain and SFT.
func SplitHeldOut(texts []string) (train, heldOut []string) { return splitHeldOut(texts) }

// lmPieces tokenises a document and cuts it into pieces of at most T tokens.
func lmPieces(tok tokenizer.Tokenizer, text string, T int) []lmPiece {
	ids := append(tok.Encode(text), tok.EOT())
	if len(ids) < 2 {
		return nil
	}
	var out []lmPiece
	for start := 0; ; start += T - 1 {
		if start+T >= len(ids) {
			return append(out, lmPiece{toks: ids[start:], final: true})
		}
		out = append(out, lmPiece{toks: ids[start : start+T]})
	}
}

// packRows places pieces into rows of T tokens by first fit (a non-final piece fills a row
// alone); row order follows the first piece placed in each row.
func packRows(pieces []lmPiece, T int) []lmRow {
	var rows []lmRow
	var open []int // rows with room for a piece of 2 tokens
	for _, p := range pieces {
		if !p.final {
			rows = append(rows, pieceRow(p))
			continue
		}
		placed := false
		for k, r := range open {
			if T-len(rows[r].toks) >= len(p.toks) {
				rows[r].toks = append(rows[r].toks, p.toks...)
				rows[r].mask = append(rows[r].mask, pieceRow(p).mask...)
				if T-len(rows[r].toks) < 2 {
					open = append(open[:k], open[k+1:]...)
				}
				placed = true
				break
			}
		}
		if !placed {
			rows = append(rows, pieceRow(p))
			if T-len(p.toks) >= 2 {
				open = append(open, len(rows)-1)
			}
		}
	}
	return rows
}

func pieceRow(p lmPiece) lmRow {
	r := lmRow{toks: append([]int(nil), p.toks...), mask: make([]bool, len(p.toks))}
	for i := 1; i < len(r.mask); i++ {
		r.mask[i] = true
	}
	return r
}

// streamRows concatenates the documents (each ends with EOT) and cuts windows of T tokens with
// stride T-1; the first token of a window is context only.
func streamRows(docs [][]int, T int) []lmRow {
	var s []int
	for _, d := range docs {
		s = append(s, d...)
	}
	var rows []lmRow
	for start := 0; start+1 < len(s); start += T - 1 {
		end := min(start+T, len(s))
		r := lmRow{toks: s[start:end], mask: make([]bool, end-start)}
		for i := 1; i < len(r.mask); i++ {
			r.mask[i] = true
		}
		rows = append(rows, r)
	}
	return rows
}

// lmData is the training stream: rows of epoch e come from a shuffle keyed by (seed, e).
type lmData struct {
	docs   [][]int // token ids of every training document, EOT included
	T      int
	layout string
	seed   uint64
	tok    tokenizer.Tokenizer
	texts  []string

	epoch int
	rows  []lmRow
	next  int
}

func newLMData(tok tokenizer.Tokenizer, texts []string, T int, layout string, seed uint64) *lmData {
	d := &lmData{T: T, layout: layout, seed: seed, tok: tok, epoch: -1}
	for _, t := range texts {
		if ids := append(tok.Encode(t), tok.EOT()); len(ids) >= 2 {
			d.docs = append(d.docs, ids)
			d.texts = append(d.texts, t)
		}
	}
	return d
}

func (d *lmData) epochRows(e int) []lmRow {
	rng := rand.New(rand.NewPCG(d.seed, 0x5eed0000+uint64(e)))
	order := rng.Perm(len(d.docs))
	if d.layout == LayoutStream {
		docs := make([][]int, len(order))
		for i, k := range order {
			docs[i] = d.docs[k]
		}
		return streamRows(docs, d.T)
	}
	var pieces []lmPiece
	for _, k := range order {
		pieces = append(pieces, lmPieces(d.tok, d.texts[k], d.T)...)
	}
	rows := packRows(pieces, d.T)
	rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	return rows
}

// batch returns the next n rows of the stream (crossing into the next epoch as needed).
func (d *lmData) batch(n int) model.Batch {
	b := model.Batch{Tokens: make([][]int, n), Mask: make([][]bool, n)}
	for i := range n {
		for d.epoch < 0 || d.next >= len(d.rows) {
			d.epoch++
			d.rows, d.next = d.epochRows(d.epoch), 0
		}
		r := d.rows[d.next]
		d.next++
		b.Tokens[i], b.Mask[i] = r.toks, r.mask
	}
	return b
}

func rowFill(rows []lmRow, T int) float64 {
	n := 0
	for _, r := range rows {
		n += len(r.toks)
	}
	return float64(n) / float64(len(rows)*T)
}

// ---------- held-out loss ----------

// heldOutSet is the held-out documents packed once, in order.
type heldOutSet struct {
	rows  []lmRow
	bytes int
}

func newHeldOutSet(tok tokenizer.Tokenizer, texts []string, T int) heldOutSet {
	var pieces []lmPiece
	h := heldOutSet{}
	for _, t := range texts {
		p := lmPieces(tok, t, T)
		if len(p) > 0 {
			h.bytes += len(tok.Encode(t))
		}
		pieces = append(pieces, p...)
	}
	h.rows = packRows(pieces, T)
	return h
}

// natsPerByte evaluates the held-out rows with tr (packed) and adapter a (LoRA mode; nil for
// full mode or the base model).
func (h heldOutSet) natsPerByte(tr *model.LMTrainer, a *model.Adapter) (float64, error) {
	if h.bytes == 0 {
		return math.NaN(), nil
	}
	B := tr.Batch()
	var sum float64
	var count int
	for lo := 0; lo < len(h.rows); lo += B {
		b := model.Batch{Tokens: make([][]int, B), Mask: make([][]bool, B)}
		for i := 0; i < B && lo+i < len(h.rows); i++ {
			b.Tokens[i], b.Mask[i] = h.rows[lo+i].toks, h.rows[lo+i].mask
		}
		l, n, err := tr.Loss(a, b)
		if err != nil {
			return 0, err
		}
		sum += l * float64(n)
		count += n
	}
	if count != h.bytes {
		return 0, fmt.Errorf("held-out: %d predictions for %d bytes", count, h.bytes)
	}
	return sum / float64(h.bytes), nil
}

// HeldOutNatsPerByte is the held-out loss (nats/byte, the split and measure of Pretrain) of the
// model w, or of w with adapter a when a is not nil, on the held-out part of texts.
func HeldOutNatsPerByte(w *model.Weights, a *model.Adapter, texts []string, batch int) (float64, error) {
	if err := checkByteModel(w.Config); err != nil {
		return 0, err
	}
	_, held := splitHeldOut(texts)
	T := w.Config.NPositions
	var tr *model.LMTrainer
	var err error
	if a != nil {
		tr, err = model.NewLoRALMTrainer(w, a.Rank, max(batch, 1), T, model.LMOptions{Packed: true})
	} else {
		tr, err = model.NewLMTrainer(w, max(batch, 1), T, model.LMOptions{Packed: true})
	}
	if err != nil {
		return 0, err
	}
	return newHeldOutSet(tokenizer.Byte{}, held, T).natsPerByte(tr, a)
}

// ---------- the optimisation loop ----------

func (o LMOptions) withDefaults(nPos int) (LMOptions, error) {
	if o.Steps <= 0 {
		return o, fmt.Errorf("steps must be > 0, got %d", o.Steps)
	}
	if o.Batch == 0 {
		o.Batch = 16
	}
	if o.SeqLen == 0 {
		o.SeqLen = nPos
	}
	if o.LR == 0 {
		o.LR = 1e-3
	}
	if o.MinLRRatio == 0 {
		o.MinLRRatio = 0.1
	} else if o.MinLRRatio < 0 {
		o.MinLRRatio = 0
	}
	if o.Warmup == 0 {
		o.Warmup = min(o.Steps/20, 200)
	} else if o.Warmup < 0 {
		o.Warmup = 0
	}
	if o.Schedule == "" {
		o.Schedule = ScheduleCosine
	}
	if o.MaxGradNorm == 0 {
		o.MaxGradNorm = 1
	}
	if o.Layout == "" {
		o.Layout = LayoutPacked
	}
	if o.EvalEvery == 0 {
		o.EvalEvery = max(o.Steps/10, 1)
	}
	switch {
	case o.Batch < 0:
		return o, fmt.Errorf("batch must be > 0, got %d", o.Batch)
	case o.SeqLen < 2 || o.SeqLen > nPos:
		return o, fmt.Errorf("sequence length %d outside [2, n_positions %d]", o.SeqLen, nPos)
	case !(o.LR > 0) || math.IsInf(o.LR, 0):
		return o, fmt.Errorf("learning rate must be > 0 and finite, got %g", o.LR)
	case o.MinLRRatio > 1:
		return o, fmt.Errorf("min LR ratio must be <= 1, got %g", o.MinLRRatio)
	case o.Warmup >= o.Steps:
		return o, fmt.Errorf("warmup (%d) must be shorter than steps (%d)", o.Warmup, o.Steps)
	case o.Schedule != ScheduleCosine && o.Schedule != ScheduleLinear:
		return o, fmt.Errorf("unknown schedule %q (valid: cosine, linear)", o.Schedule)
	case !(o.WeightDecay >= 0):
		return o, fmt.Errorf("weight decay must be >= 0, got %g", o.WeightDecay)
	case o.Layout != LayoutPacked && o.Layout != LayoutStream:
		return o, fmt.Errorf("unknown layout %q (valid: packed, stream)", o.Layout)
	}
	return o, nil
}

// lrAt is the learning rate of step s (0-based): linear warm-up to LR over Warmup steps, then
// cosine or linear decay to MinLRRatio·LR at the last step.
func (o LMOptions) lrAt(s int) float64 {
	if s < o.Warmup {
		return o.LR * float64(s+1) / float64(o.Warmup)
	}
	lo := o.LR * o.MinLRRatio
	span := o.Steps - 1 - o.Warmup
	p := 1.0
	if span > 0 {
		p = float64(s-o.Warmup) / float64(span)
	}
	if o.Schedule == ScheduleLinear {
		return lo + (o.LR-lo)*(1-p)
	}
	return lo + (o.LR-lo)*0.5*(1+math.Cos(math.Pi*p))
}

// decays reports whether weight decay applies to a tensor: matrices, not biases or LayerNorm.
func decays(name string) bool {
	if strings.HasSuffix(name, ".lora_A") || strings.HasSuffix(name, ".lora_B") {
		return true
	}
	return strings.HasSuffix(name, ".weight") && !strings.Contains(name, "ln_")
}

// adamW is AdamW (trainer/optim) with weight decay on some tensors only, global-norm clipping
// across all of them, and a per-step learning rate. optim.AdamW has one decay rate and a fixed
// schedule, so there are two of them (decayed and not), each run at the peak rate with clipping
// off; the step's own rate lr is applied by scaling the update: an AdamW update is linear in
// the rate, p' = p − lr·(wd·p + m̂/(√v̂+ε)), so p + (lr/peak)·(p'_peak − p) is the update at lr.
type adamW struct {
	peak, clip float64
	groups     [2]*optim.AdamW // decayed, not decayed
	params     [2]map[string][]float64
	names      []string // sorted, all groups
	prev       []float64
}

func newAdamW(o LMOptions, params map[string][]float64) (*adamW, error) {
	a := &adamW{peak: o.LR, clip: o.MaxGradNorm}
	for g := range a.groups {
		cfg := optim.Config{LR: o.LR, MaxGradNorm: -1, Decay: optim.Constant}
		if g == 0 {
			cfg.WeightDecay = o.WeightDecay
		}
		opt, err := optim.New(cfg)
		if err != nil {
			return nil, err
		}
		a.groups[g], a.params[g] = opt, map[string][]float64{}
	}
	for name, p := range params {
		g := 1
		if decays(name) {
			g = 0
		}
		a.params[g][name] = p
		a.names = append(a.names, name)
	}
	sort.Strings(a.names)
	return a, nil
}

// step updates the parameters in place from grads (which it scales when clipping) and returns
// the gradient norm before clipping.
func (a *adamW) step(grads map[string]*model.Tensor, lr float64) float64 {
	var sq float64
	for _, n := range a.names {
		for _, g := range grads[n].Data {
			sq += g * g
		}
	}
	norm := math.Sqrt(sq)
	if a.clip > 0 && norm > a.clip {
		s := a.clip / norm
		for _, n := range a.names {
			for i := range grads[n].Data {
				grads[n].Data[i] *= s
			}
		}
	}
	f := lr / a.peak
	if f != 1 {
		a.prev = a.prev[:0]
		for _, n := range a.names {
			a.prev = append(a.prev, a.param(n)...)
		}
	}
	for g, opt := range a.groups {
		if len(a.params[g]) == 0 {
			continue
		}
		gr := make(map[string][]float64, len(a.params[g]))
		for n := range a.params[g] {
			gr[n] = grads[n].Data
		}
		opt.Step(a.params[g], gr)
	}
	if f != 1 {
		k := 0
		for _, n := range a.names {
			p := a.param(n)
			for i := range p {
				p[i] = a.prev[k] + f*(p[i]-a.prev[k])
				k++
			}
		}
	}
	return norm
}

func (a *adamW) param(n string) []float64 {
	if p, ok := a.params[0][n]; ok {
		return p
	}
	return a.params[1][n]
}

// state returns the moments of every tensor by name and the step count.
func (a *adamW) state() (m, v map[string][]float64, step int) {
	m, v = map[string][]float64{}, map[string][]float64{}
	for _, opt := range a.groups {
		st := opt.State()
		for n := range st.M {
			m[n], v[n] = st.M[n], st.V[n]
		}
		step = max(step, st.Step)
	}
	return m, v, step
}

func (a *adamW) restore(m, v map[string][]float64, step int) error {
	for g, opt := range a.groups {
		st := optim.State{Step: step, M: map[string][]float64{}, V: map[string][]float64{}}
		for n := range a.params[g] {
			mm, ok1 := m[n]
			vv, ok2 := v[n]
			if !ok1 || !ok2 {
				return fmt.Errorf("optimizer state lacks %q", n)
			}
			st.M[n], st.V[n] = mm, vv
		}
		if len(a.params[g]) == 0 {
			st.Step = 0
		}
		if err := opt.Restore(st); err != nil {
			return err
		}
		if err := opt.Check(a.params[g]); err != nil {
			return err
		}
	}
	return nil
}

// lmRun is one training run (pretraining, or one SFT member).
type lmRun struct {
	o        LMOptions
	tr       *model.LMTrainer
	evalTr   *model.LMTrainer // packed: the held-out measure scores every document alone
	adapter  *model.Adapter   // LoRA mode
	opt      *adamW
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

// run trains from r.step to o.Steps.
func (r *lmRun) run() error {
	r.start = time.Now()
	for r.step < r.o.Steps {
		b := r.data.batch(r.o.Batch)
		out, err := r.tr.Step(r.adapter, b)
		if err != nil {
			return err
		}
		if math.IsNaN(out.Loss) || math.IsInf(out.Loss, 0) {
			return fmt.Errorf("step %d: loss is %g", r.step+1, out.Loss)
		}
		lr := r.o.lrAt(r.step)
		norm := r.opt.step(out.Grads, lr)
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

// skip advances the data stream past the batches of the first `steps` steps.
func (r *lmRun) skip(steps int) {
	for range steps {
		r.data.batch(r.o.Batch)
	}
}

// checkByteModel checks that cfg fits the byte-level tokenizer.
func checkByteModel(cfg model.Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.VocabSize < (tokenizer.Byte{}).VocabSize() || cfg.EOSTokenID != tokenizer.ByteEOT {
		return fmt.Errorf("the byte-level tokenizer needs vocab_size >= 257 and eos_token_id 256, got %d and %d", cfg.VocabSize, cfg.EOSTokenID)
	}
	return nil
}

// ---------- Pretrain ----------

// ByteConfig is a GPT-2 config for the byte-level tokenizer (vocab 257, EOT 256).
func ByteConfig(width, layers, heads, context int) model.Config {
	return model.Config{ModelType: "gpt2", Architectures: []string{"GPT2LMHeadModel"}, VocabSize: 257, NPositions: context,
		NEmbd: width, NLayer: layers, NHead: heads, LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new",
		BOSTokenID: tokenizer.ByteEOT, EOSTokenID: tokenizer.ByteEOT}
}

// CheckpointFile is the name of Pretrain's checkpoint inside PretrainOptions.CheckpointDir.
const CheckpointFile = "pretrain.ckpt.safetensors"

// Pretrain trains a GPT-2 of config cfg from scratch (model.Init with the seed) as a byte-level
// language model on texts (one document each) with every base tensor trained, and returns the
// weights and a report. See the file comment for the data, the held-out measure, determinism and
// checkpoints.
func Pretrain(cfg model.Config, texts []string, opt PretrainOptions) (*model.Weights, PretrainReport, error) {
	var rep PretrainReport
	if err := checkByteModel(cfg); err != nil {
		return nil, rep, fmt.Errorf("pretrain: %w", err)
	}
	o, err := opt.LMOptions.withDefaults(cfg.NPositions)
	if err != nil {
		return nil, rep, fmt.Errorf("pretrain: %w", err)
	}
	if opt.CheckpointEvery == 0 {
		opt.CheckpointEvery = 200
	}
	tok := tokenizer.Byte{}
	train, held := splitHeldOut(texts)
	data := newLMData(tok, train, o.SeqLen, o.Layout, o.Seed)
	if len(data.docs) == 0 {
		return nil, rep, errors.New("pretrain: no non-empty training text")
	}
	if err := cfg.CheckMemory(); err != nil {
		return nil, rep, fmt.Errorf("pretrain: %w", err)
	}
	w := model.Init(cfg, int64(o.Seed))
	tr, err := model.NewLMTrainer(w, o.Batch, o.SeqLen, model.LMOptions{Packed: o.Layout == LayoutPacked})
	if err != nil {
		return nil, rep, fmt.Errorf("pretrain: %w", err)
	}
	adam, err := newAdamW(o, tr.Params())
	if err != nil {
		return nil, rep, fmt.Errorf("pretrain: %w", err)
	}
	evalTr := tr
	if o.Layout != LayoutPacked {
		if evalTr, err = model.NewLMTrainer(w, o.Batch, o.SeqLen, model.LMOptions{Packed: true}); err != nil {
			return nil, rep, fmt.Errorf("pretrain: %w", err)
		}
	}
	r := &lmRun{o: o, tr: tr, evalTr: evalTr, opt: adam, data: data, held: newHeldOutSet(tok, held, o.SeqLen), members: 1, progress: opt.Progress}
	first := data.epochRows(0)
	rep = PretrainReport{TrainDocs: len(train), HeldOutDocs: len(held), HeldOutBytes: r.held.bytes,
		RowsPerEpoch: len(first), Fill: rowFill(first, o.SeqLen), Steps: o.Steps}
	for _, t := range train {
		rep.TrainBytes += len(t)
	}
	for _, t := range w.Tensors {
		rep.Params += len(t.Data)
	}

	fp := pretrainFingerprint(cfg, o, texts)
	var ckpt string
	if opt.CheckpointDir != "" {
		ckpt = filepath.Join(opt.CheckpointDir, CheckpointFile)
		st, err := loadPretrainCheckpoint(ckpt, fp, w, adam)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, rep, fmt.Errorf("pretrain: %w", err)
		default:
			r.step, r.tokens, r.curve = st.Step, st.Tokens, st.Curve
			rep.ResumedFrom = st.Step
			r.skip(st.Step)
		}
		r.checkpoint = func(step int) (bool, error) {
			if step%opt.CheckpointEvery != 0 && step != o.Steps {
				return false, nil
			}
			return true, savePretrainCheckpoint(ckpt, fp, w, adam, ckptState{Step: step, Tokens: r.tokens, Curve: r.curve})
		}
	}
	if err := r.run(); err != nil {
		return nil, rep, fmt.Errorf("pretrain: %w", err)
	}
	rep.Tokens, rep.TrainLoss, rep.Curve, rep.Elapsed = r.tokens, r.trainLoss(), r.curve, time.Since(r.start)
	if n := len(r.curve); n > 0 {
		rep.HeldOut = r.curve[n-1].NatsPerByte
	}
	return w, rep, nil
}

type ckptState struct {
	Step   int            `json:"step"`
	Tokens int64          `json:"tokens"`
	Curve  []HeldOutPoint `json:"curve"`
}

// pretrainFingerprint identifies a pretraining: config, effective options and texts.
func pretrainFingerprint(cfg model.Config, o LMOptions, texts []string) string {
	h := sha256.New()
	for _, t := range texts {
		fmt.Fprintf(h, "%d:%s", len(t), t)
	}
	data := hex.EncodeToString(h.Sum(nil))
	o.EvalEvery = 0 // evaluation does not change the trajectory
	b, _ := json.Marshal(struct {
		Config  model.Config
		Options LMOptions
		Texts   string
	}{cfg, o, data})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

func savePretrainCheckpoint(path, fp string, w *model.Weights, a *adamW, st ckptState) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	m, v, step := a.state()
	if step != st.Step {
		return fmt.Errorf("checkpoint: optimizer at step %d, run at %d", step, st.Step)
	}
	tensors := map[string]*model.Tensor{}
	for n, t := range w.Tensors {
		tensors["w/"+n] = t
		tensors["m/"+n] = &model.Tensor{Shape: []int{len(m[n])}, Data: m[n]}
		tensors["v/"+n] = &model.Tensor{Shape: []int{len(v[n])}, Data: v[n]}
	}
	stj, _ := json.Marshal(st)
	meta := map[string]string{"fingerprint": fp, "state": string(stj), "step": strconv.Itoa(st.Step)}
	return model.WriteFileAtomicFunc(path, func(wr io.Writer) error {
		return model.EncodeTensors(wr, tensors, meta, "F64")
	})
}

// loadPretrainCheckpoint restores w (in place) and the optimizer from path.
func loadPretrainCheckpoint(path, fp string, w *model.Weights, a *adamW) (ckptState, error) {
	var st ckptState
	if _, err := os.Stat(path); err != nil {
		return st, err
	}
	tensors, meta, err := model.LoadTensors(path)
	if err != nil {
		return st, err
	}
	if meta["fingerprint"] != fp {
		return st, fmt.Errorf("%s is the checkpoint of a different pretraining (config, options or texts differ): remove it or use another checkpoint folder", path)
	}
	if err := json.Unmarshal([]byte(meta["state"]), &st); err != nil {
		return st, fmt.Errorf("%s: state: %w", path, err)
	}
	m, v := map[string][]float64{}, map[string][]float64{}
	for n, t := range w.Tensors {
		src, ok := tensors["w/"+n]
		if !ok || len(src.Data) != len(t.Data) {
			return st, fmt.Errorf("%s: missing or misshapen w/%s", path, n)
		}
		copy(t.Data, src.Data) // in place: the training graph views these slices
		mt, ok1 := tensors["m/"+n]
		vt, ok2 := tensors["v/"+n]
		if !ok1 || !ok2 {
			return st, fmt.Errorf("%s: missing optimizer state of %s", path, n)
		}
		m[n], v[n] = mt.Data, vt.Data
	}
	if len(tensors) != 3*len(w.Tensors) {
		return st, fmt.Errorf("%s: %d tensors, want %d", path, len(tensors), 3*len(w.Tensors))
	}
	return st, a.restore(m, v, st.Step)
}

// ---------- SFT ----------

// memberSeed is the seed of SFT member m: its adapter's A and its data order.
func memberSeed(seed uint64, m int) uint64 {
	return seed*1_000_003 + uint64(m)*7919 + 17
}

// SFT trains `members` LoRA adapters (rank, alpha; on every LoRATargets projection) on base,
// frozen, each with its own seed for A's initialisation and for the data order (so the ensemble
// starts diverse). Each text is one sequence ending with EOT and every token after its first is
// predicted (packed rows, see the file comment); the held-out 2% is never trained on. The
// options' Layout is ignored and WeightDecay applies to A and B.
func SFT(base *model.Weights, texts []string, members int, rank int, alpha float64, opt SFTOptions) ([]*model.Adapter, error) {
	if base == nil {
		return nil, errors.New("sft: nil base model")
	}
	cfg := base.Config
	if err := checkByteModel(cfg); err != nil {
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
	o, err := opt.LMOptions.withDefaults(cfg.NPositions)
	if err != nil {
		return nil, fmt.Errorf("sft: %w", err)
	}
	o.Layout = LayoutPacked
	tok := tokenizer.Byte{}
	train, held := splitHeldOut(texts)
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
		adam, err := newAdamW(o, params)
		if err != nil {
			return nil, fmt.Errorf("sft: %w", err)
		}
		r := &lmRun{o: o, tr: tr, evalTr: tr, adapter: a, opt: adam, data: newLMData(tok, train, o.SeqLen, LayoutPacked, seed),
			held: heldSet, member: m, members: members, progress: opt.Progress}
		if err := r.run(); err != nil {
			return nil, fmt.Errorf("sft: member %d: %w", m, err)
		}
		out[m] = a
	}
	return out, nil
}

// ---------- model folders ----------

// SaveBaseModel writes a byte-level model folder: config.json, model.safetensors (F32) and
// tokenizer_config.json {"tokenizer_class": "byte"}, each atomically.
func SaveBaseModel(dir string, w *model.Weights) error {
	if err := model.SaveWeights(dir, w); err != nil {
		return err
	}
	return model.WriteFileAtomic(filepath.Join(dir, tokenizer.ConfigFile), []byte("{\"tokenizer_class\": \"byte\"}\n"))
}

// SaveSFTAdapters replaces dir/adapters with the given adapters as member-<m>.safetensors
// (F32). The new folder is written beside the old one and renamed over it.
func SaveSFTAdapters(dir string, adapters []*model.Adapter) error {
	final := filepath.Join(dir, "adapters")
	tmp := final + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	for m, a := range adapters {
		if err := model.SaveAdapter(filepath.Join(tmp, fmt.Sprintf("member-%d.safetensors", m)), a); err != nil {
			return err
		}
	}
	old := final + ".old"
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	if _, err := os.Stat(final); err == nil {
		if err := os.Rename(final, old); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return os.RemoveAll(old)
}
