package pipeline

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/optim"
	"github.com/bpo-dev/bpo/trainer/task"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

func reviewsTask(t *testing.T) *task.Task {
	t.Helper()
	tk, err := task.Builtin("reviews")
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// tinyPretrain is a model small enough for tests: d16, 1 layer, 2 heads, 32 positions.
func tinyPretrainConfig() model.Config { return ByteConfig(16, 1, 2, 32) }

func tinyOptions(steps int) PretrainOptions {
	return PretrainOptions{LMOptions: LMOptions{Steps: steps, Batch: 4, LR: 1e-2, Seed: 7, WeightDecay: 0.1, EvalEvery: 5}}
}

func sameWeights(t *testing.T, a, b *model.Weights) {
	t.Helper()
	for name, ta := range a.Tensors {
		tb := b.Tensors[name]
		for i := range ta.Data {
			if math.Float64bits(ta.Data[i]) != math.Float64bits(tb.Data[i]) {
				t.Fatalf("%s[%d]: %v vs %v (not bit-identical)", name, i, ta.Data[i], tb.Data[i])
			}
		}
	}
}

func TestPackingPredictsEveryByteOnce(t *testing.T) {
	tok := tokenizer.Byte{}
	texts := []string{"a", "hello there", "a sentence longer than sixteen bytes, split into pieces", "ok", "x y z w"}
	const T = 16
	bytes := 0
	var pieces []lmPiece
	for _, s := range texts {
		bytes += len(s)
		pieces = append(pieces, lmPieces(tok, s, T)...)
	}
	rows := packRows(pieces, T)
	masked, eots := 0, 0
	for _, r := range rows {
		if len(r.toks) > T || len(r.mask) != len(r.toks) {
			t.Fatalf("row of %d tokens, mask %d", len(r.toks), len(r.mask))
		}
		if r.mask[0] {
			t.Error("a row's first token is masked")
		}
		for i, m := range r.mask {
			if m {
				masked++
			}
			if r.toks[i] == tok.EOT() {
				eots++
				if i+1 < len(r.toks) && r.mask[i+1] {
					t.Error("the token after an EOT (a document start) is masked")
				}
			}
		}
	}
	if masked != bytes || eots != len(texts) {
		t.Errorf("%d masked tokens and %d EOTs for %d bytes in %d texts", masked, eots, bytes, len(texts))
	}
	if len(rows) >= len(pieces) {
		t.Errorf("%d pieces in %d rows: nothing was packed", len(pieces), len(rows))
	}
	var docs [][]int
	for _, s := range texts {
		docs = append(docs, append(tok.Encode(s), tok.EOT()))
	}
	masked = 0
	for _, r := range streamRows(docs, T) {
		for _, m := range r.mask {
			if m {
				masked++
			}
		}
	}
	if masked != bytes+len(texts)-1 { // every token of the stream but the first
		t.Errorf("stream: %d masked tokens, want %d", masked, bytes+len(texts)-1)
	}
}

func TestHeldOutSplit(t *testing.T) {
	tk := reviewsTask(t)
	train, held := SplitHeldOut(tk.Pretrain)
	frac := float64(len(held)) / float64(len(tk.Pretrain))
	if frac < 0.01 || frac > 0.03 || len(train)+len(held) != len(tk.Pretrain) {
		t.Errorf("held-out %d of %d (%.2f%%)", len(held), len(tk.Pretrain), 100*frac)
	}
	train2, held2 := SplitHeldOut(append([]string(nil), tk.Pretrain...))
	if len(held2) != len(held) || held2[0] != held[0] || len(train2) != len(train) {
		t.Error("the split is not deterministic")
	}
	if _, h := SplitHeldOut([]string{"one", "two"}); len(h) != 1 {
		t.Errorf("tiny input: %d held-out texts, want 1", len(h))
	}
}

// TestPretrainLowersLoss: a few steps on the reviews texts lower the training and held-out loss.
func TestPretrainLowersLoss(t *testing.T) {
	tk := reviewsTask(t)
	texts := tk.Pretrain[:400]
	cfg := tinyPretrainConfig()
	for _, layout := range []string{LayoutPacked, LayoutStream} {
		t.Run(layout, func(t *testing.T) {
			o := tinyOptions(30)
			o.Layout = layout
			var losses []float64
			o.Progress = func(p LMProgress) error { losses = append(losses, p.Loss); return nil }
			before, err := HeldOutNatsPerByte(model.Init(cfg, int64(o.Seed)), nil, texts, 4)
			if err != nil {
				t.Fatal(err)
			}
			w, rep, err := Pretrain(cfg, texts, o)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("train loss %.3f -> %.3f; held-out %.3f -> %.3f nats/byte; %d rows/epoch, %.1f%% full",
				losses[0], rep.TrainLoss, before, rep.HeldOut, rep.RowsPerEpoch, 100*rep.Fill)
			if !(losses[len(losses)-1] < losses[0]-0.5) || !(rep.HeldOut < before-0.5) {
				t.Errorf("loss did not drop: train %.3f -> %.3f, held-out %.3f -> %.3f", losses[0], losses[len(losses)-1], before, rep.HeldOut)
			}
			again, err := HeldOutNatsPerByte(w, nil, texts, 3)
			if err != nil {
				t.Fatal(err)
			}
			// Another batch size packs other rows into other GEMM shapes: float32 rounding moves
			// the last digits (the engine computes in float32; sums accumulate in float64).
			if math.Abs(again-rep.HeldOut) > 1e-6*rep.HeldOut {
				t.Errorf("HeldOutNatsPerByte %.15g, report %.15g", again, rep.HeldOut)
			}
			if len(rep.Curve) != 6 || rep.Curve[5].Step != 30 {
				t.Errorf("held-out curve %v", rep.Curve)
			}
		})
	}
}

var errStop = errors.New("stopped")

// TestPretrainResume: a run stopped after step 8 (checkpoint at 5) and run again resumes from
// step 5 and ends bit-identical to an uninterrupted run; the checkpoint of another
// configuration is refused. The uninterrupted run uses GOMAXPROCS 1 and the others the
// default, so this also checks that the thread count does not change the result.
func TestPretrainResume(t *testing.T) {
	tk := reviewsTask(t)
	texts := tk.Pretrain[:300]
	cfg := tinyPretrainConfig()

	prev := runtime.GOMAXPROCS(1)
	ref, refRep, err := Pretrain(cfg, texts, tinyOptions(12))
	runtime.GOMAXPROCS(prev)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	o := tinyOptions(12)
	o.CheckpointDir, o.CheckpointEvery = dir, 5
	o.Progress = func(p LMProgress) error {
		if p.Step == 8 {
			return errStop
		}
		return nil
	}
	if _, _, err := Pretrain(cfg, texts, o); !errors.Is(err, errStop) {
		t.Fatalf("interrupted run: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, CheckpointFile)); err != nil {
		t.Fatal(err)
	}
	var steps []int
	o.Progress = func(p LMProgress) error { steps = append(steps, p.Step); return nil }
	w, rep, err := Pretrain(cfg, texts, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ResumedFrom != 5 || steps[0] != 6 || len(steps) != 7 {
		t.Errorf("resumed from %d, ran steps %v", rep.ResumedFrom, steps)
	}
	sameWeights(t, ref, w)
	if rep.Tokens != refRep.Tokens || rep.HeldOut != refRep.HeldOut || len(rep.Curve) != len(refRep.Curve) {
		t.Errorf("report after resume: tokens %d held-out %v curve %v; uninterrupted: %d %v %v",
			rep.Tokens, rep.HeldOut, rep.Curve, refRep.Tokens, refRep.HeldOut, refRep.Curve)
	}
	// a finished checkpoint: the run returns at once with the same weights
	w2, rep2, err := Pretrain(cfg, texts, o)
	if err != nil {
		t.Fatal(err)
	}
	sameWeights(t, ref, w2)
	if rep2.ResumedFrom != 12 {
		t.Errorf("second rerun resumed from %d", rep2.ResumedFrom)
	}
	// another pretraining refuses the checkpoint
	o.LR = 2e-2
	if _, _, err := Pretrain(cfg, texts, o); err == nil {
		t.Error("a checkpoint of another configuration was accepted")
	}
}

// TestSFTAdapters: N distinct adapters of the right shapes, deterministic, each lowering the
// held-out loss of the SFT texts.
func TestSFTAdapters(t *testing.T) {
	tk := reviewsTask(t)
	cfg := tinyPretrainConfig()
	base, _, err := Pretrain(cfg, tk.Pretrain[:300], tinyOptions(20))
	if err != nil {
		t.Fatal(err)
	}
	texts := tk.SFT[:200]
	o := SFTOptions{LMOptions: LMOptions{Steps: 15, Batch: 4, LR: 1e-2, Seed: 3}}
	held := map[int]float64{}
	o.Progress = func(p LMProgress) error {
		if p.Step == p.Steps {
			held[p.Member] = p.HeldOut
		}
		return nil
	}
	const N, r, alpha = 3, 2, 4.0
	ads, err := SFT(base, texts, N, r, alpha, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(ads) != N {
		t.Fatalf("%d adapters, want %d", len(ads), N)
	}
	baseHeld, err := HeldOutNatsPerByte(base, nil, texts, 4)
	if err != nil {
		t.Fatal(err)
	}
	for m, a := range ads {
		if err := a.Validate(cfg); err != nil {
			t.Fatalf("member %d: %v", m, err)
		}
		if a.Rank != r || a.Alpha != alpha || len(a.Tensors) != len(cfg.AdapterShapes(r)) {
			t.Errorf("member %d: rank %d alpha %g, %d tensors", m, a.Rank, a.Alpha, len(a.Tensors))
		}
		for name, shape := range cfg.AdapterShapes(r) {
			if !sameShape(a.Tensors[name].Shape, shape) {
				t.Errorf("member %d: %s shape %v, want %v", m, name, a.Tensors[name].Shape, shape)
			}
		}
		if b := a.Tensors["h.0.mlp.c_fc.lora_B"]; maxAbs(b.Data) == 0 {
			t.Errorf("member %d: B is still zero", m)
		}
		t.Logf("member %d: held-out %.4f nats/byte (base %.4f)", m, held[m], baseHeld)
		if !(held[m] < baseHeld) {
			t.Errorf("member %d: held-out %.4f not below the base's %.4f", m, held[m], baseHeld)
		}
		for k := 0; k < m; k++ {
			for _, name := range []string{"h.0.attn.c_attn.lora_A", "h.0.attn.c_attn.lora_B"} {
				if sameData(ads[k].Tensors[name].Data, a.Tensors[name].Data) {
					t.Errorf("members %d and %d have the same %s", k, m, name)
				}
			}
		}
	}
	o.Progress = nil
	again, err := SFT(base, texts, 2, r, alpha, o)
	if err != nil {
		t.Fatal(err)
	}
	for m := range again {
		for name, ta := range ads[m].Tensors {
			if !sameData(ta.Data, again[m].Tensors[name].Data) {
				t.Errorf("member %d: %s differs between two identical SFT runs", m, name)
			}
		}
	}
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sameData(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return false
		}
	}
	return true
}

func maxAbs(x []float64) float64 {
	var m float64
	for _, v := range x {
		m = math.Max(m, math.Abs(v))
	}
	return m
}

// TestModelFolderLoads: the folder SaveBaseModel + SaveSFTAdapters write (what bpo pretrain and
// bpo sft write) is accepted by LoadBase, with the byte tokenizer and the SFT adapters as the
// members' initial adapters.
func TestModelFolderLoads(t *testing.T) {
	tk := reviewsTask(t)
	cfg := tinyPretrainConfig()
	w, _, err := Pretrain(cfg, tk.Pretrain[:200], tinyOptions(5))
	if err != nil {
		t.Fatal(err)
	}
	volume := t.TempDir()
	dir := filepath.Join(volume, "models", "tiny")
	if err := SaveBaseModel(dir, w); err != nil {
		t.Fatal(err)
	}
	// the test run (makeRun) has 2 members of rank 2, alpha 4; write 3 to check replacement
	old, err := SFT(w, tk.SFT[:100], 3, 2, 4, SFTOptions{LMOptions: LMOptions{Steps: 3, Batch: 4, Seed: 9}})
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveSFTAdapters(dir, old); err != nil {
		t.Fatal(err)
	}
	ads, err := SFT(w, tk.SFT[:100], 2, 2, 4, SFTOptions{LMOptions: LMOptions{Steps: 3, Batch: 4, Seed: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveSFTAdapters(dir, ads); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(AdapterFile(dir, 2)); !os.IsNotExist(err) {
		t.Errorf("a stale adapter survived: %v", err)
	}
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer_config.json"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o644 {
			t.Errorf("%s has mode %v", f, st.Mode().Perm())
		}
	}
	e := makeRun("folder").Env(t, volume)
	b, err := e.LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Tok.(tokenizer.Byte); !ok {
		t.Errorf("tokenizer %T, want byte-level", b.Tok)
	}
	if b.Weights.Config.NEmbd != cfg.NEmbd || b.Weights.Config.NPositions != cfg.NPositions || len(b.Init) != 2 {
		t.Errorf("loaded config %+v with %d member adapters", b.Weights.Config, len(b.Init))
	}
	for name, tw := range w.Tensors {
		for i, v := range tw.Data {
			if float64(float32(v)) != b.Weights.Tensors[name].Data[i] {
				t.Fatalf("%s[%d]: saved %v, loaded %v", name, i, v, b.Weights.Tensors[name].Data[i])
			}
		}
	}
	for m, a := range b.Init {
		for name, ta := range ads[m].Tensors {
			if float64(float32(ta.Data[0])) != a.Tensors[name].Data[0] {
				t.Errorf("member %d: %s not the SFT adapter", m, name)
			}
		}
	}
}

// TestAdamWRateScaling: the per-step rate applied by scaling the update equals optim.AdamW run at
// that rate, and weight decay skips biases and LayerNorm parameters.
func TestAdamWRateScaling(t *testing.T) {
	o := LMOptions{LR: 1e-2, WeightDecay: 0.3, MaxGradNorm: -1}
	mk := func() map[string][]float64 {
		return map[string][]float64{"h.0.mlp.c_fc.weight": {0.5, -1, 2}, "h.0.mlp.c_fc.bias": {0.5, -1, 2}, "h.0.ln_1.weight": {1, 1.5, 0.5}}
	}
	grads := func(step int) map[string]*model.Tensor {
		g := map[string]*model.Tensor{}
		for n, v := range mk() {
			d := make([]float64, len(v))
			for i := range d {
				d[i] = math.Sin(float64(step*7+i)) * v[i]
			}
			g[n] = &model.Tensor{Shape: []int{len(d)}, Data: d}
		}
		return g
	}
	p := mk()
	a, err := newAdamW(o, p)
	if err != nil {
		t.Fatal(err)
	}
	ref := mk()
	refOpt := map[bool]*optim.AdamW{}
	for _, dec := range []bool{true, false} {
		cfg := optim.Config{LR: 1, MaxGradNorm: -1, Decay: optim.Constant}
		if dec {
			cfg.WeightDecay = o.WeightDecay
		}
		refOpt[dec], _ = optim.New(cfg)
	}
	rates := []float64{1e-3, 1e-2, 4e-3, 2.5e-3}
	for s, lr := range rates {
		a.step(grads(s), lr)
		// the reference: one optimizer per group, rebuilt at this step's rate with the moments kept
		for _, dec := range []bool{true, false} {
			st := refOpt[dec].State()
			cfg := optim.Config{LR: lr, MaxGradNorm: -1, Decay: optim.Constant}
			if dec {
				cfg.WeightDecay = o.WeightDecay
			}
			opt, _ := optim.New(cfg)
			if err := opt.Restore(st); err != nil {
				t.Fatal(err)
			}
			params, gr := map[string][]float64{}, map[string][]float64{}
			g := grads(s)
			for n := range ref {
				if decays(n) == dec {
					params[n], gr[n] = ref[n], g[n].Data
				}
			}
			opt.Step(params, gr)
			refOpt[dec] = opt
		}
	}
	for n := range p {
		for i := range p[n] {
			if d := math.Abs(p[n][i] - ref[n][i]); d > 1e-15*math.Max(1, math.Abs(ref[n][i])) {
				t.Errorf("%s[%d]: %.17g, optim at the same rate %.17g", n, i, p[n][i], ref[n][i])
			}
		}
	}
	if decays("h.0.mlp.c_fc.bias") || decays("ln_f.weight") || !decays("wte.weight") || !decays("h.1.attn.c_attn.lora_B") {
		t.Error("decays: wrong groups")
	}
}
