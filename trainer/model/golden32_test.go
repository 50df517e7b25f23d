package model

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// The float32 engine against PyTorch computing in float32 (hack/golden.py, hack/golden/README.md):
//
//   - testdata/golden/golden_f32.json: the small golden model and pairs of golden.json, computed
//     by PyTorch entirely in float32;
//   - testdata/golden32/: a larger model (n_embd 40, 4 heads, 2 layers, 8 pairs of 41-60 tokens)
//     made for float32 only, so that float32 rounding shows in the sums and gradients.
//
// Tolerances: response log-prob sums and the DPO loss within 1e-4 relative, every adapter
// gradient within 1e-3 normwise relative (max |diff| / max |value| over the tensor). Against the
// float64 goldens, Go float32 must be as close as PyTorch float32 is (≤ 10× its error + 1e-6).

// g32Ref is a float32 reference file: golden_f32.json (whose pairs, config and adapter are those
// of golden.json) or golden32/golden.json (self-contained).
type g32Ref struct {
	goldenCommon
	Dtype string `json:"dtype"`
	// Grads["dpo"][tensor name]: the full gradient, row-major. The values are the shortest
	// decimals of float32 numbers; g32Load rounds them back to those float32 values.
	Grads map[string]map[string]struct {
		Shape []int     `json:"shape"`
		Data  []float64 `json:"data"`
	} `json:"grads"`
	// golden32 only: the same quantities computed by PyTorch in float64.
	LogPsF64  map[string][]float64 `json:"logps_f64"`
	LossesF64 map[string]float64   `json:"losses_f64"`
}

// g32Case is one model with its float32 reference.
type g32Case struct {
	name                      string
	ref                       *g32Ref
	base                      *Weights
	ad                        *Adapter
	prompts, chosen, rejected [][]int
	f64LogPs                  map[string][]float64 // PyTorch float64 (golden.json or logps_f64)
	f64Loss                   float64
}

func g32ReadRef(t *testing.T, path string) *g32Ref {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("float32 golden vectors not present (%v); generate them with /usr/bin/python3 hack/golden.py", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r g32Ref
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if r.Dtype != "float32" || len(r.LogPs) != 8 || r.Losses["dpo"] == 0 || len(r.Grads["dpo"]) == 0 {
		t.Fatalf("%s: not a float32 reference (dtype %q, %d logps, %d dpo grads)", path, r.Dtype, len(r.LogPs), len(r.Grads["dpo"]))
	}
	for _, g := range r.Grads["dpo"] {
		for i, v := range g.Data {
			g.Data[i] = float64(float32(v))
		}
	}
	return &r
}

// g32Cases loads the small model (golden + golden_f32.json, via the helpers of
// infer_golden_test.go) and the larger golden32 model.
func g32Cases(t *testing.T) []g32Case {
	t.Helper()
	g, w, a := mtLoadGolden(t)
	small := g32Case{name: "golden", ref: g32ReadRef(t, filepath.Join(mtGoldenDir, "golden_f32.json")), base: w, ad: a, f64LogPs: g.Logps}
	for _, p := range g.Pairs {
		small.prompts = append(small.prompts, p.Prompt)
		small.chosen = append(small.chosen, p.Chosen)
		small.rejected = append(small.rejected, p.Rejected)
	}
	small.f64Loss = g32GoldenF64(t).Losses["dpo"]

	dir := filepath.Join("testdata", "golden32")
	r := g32ReadRef(t, filepath.Join(dir, "golden.json"))
	w32, err := LoadWeights(dir)
	if err != nil {
		t.Fatal(err)
	}
	a32, err := LoadAdapterFor(filepath.Join(dir, "adapter.safetensors"), w32.Config)
	if err != nil {
		t.Fatal(err)
	}
	if a32.Rank != r.LoRA.Rank || a32.Alpha != r.LoRA.Alpha {
		t.Fatalf("golden32: adapter rank %d alpha %v, golden.json says %d, %v", a32.Rank, a32.Alpha, r.LoRA.Rank, r.LoRA.Alpha)
	}
	if c := w32.Config; c.VocabSize != r.Config.VocabSize || c.NEmbd != r.Config.NEmbd || c.NLayer != r.Config.NLayer || c.NHead != r.Config.NHead {
		t.Fatalf("golden32: config.json %+v disagrees with golden.json %+v", c, r.Config)
	}
	if len(r.Pairs) == 0 || len(r.LogPsF64) != 8 || r.LossesF64["dpo"] == 0 {
		t.Fatalf("golden32/golden.json: no pairs or no float64 values")
	}
	large := g32Case{name: "golden32", ref: r, base: w32, ad: a32, f64LogPs: r.LogPsF64, f64Loss: r.LossesF64["dpo"]}
	for _, p := range r.Pairs {
		large.prompts = append(large.prompts, p.Prompt)
		large.chosen = append(large.chosen, p.Chosen)
		large.rejected = append(large.rejected, p.Rejected)
	}
	return []g32Case{small, large}
}

// g32F64 is the part of golden.json (PyTorch float64, small model) that mtGolden does not read.
type g32F64 struct {
	Losses map[string]float64 `json:"losses"`
	Grads  map[string][]struct {
		Name  string  `json:"name"`
		Index []int   `json:"index"`
		Value float64 `json:"value"`
	} `json:"grads"`
}

func g32GoldenF64(t *testing.T) *g32F64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mtGoldenDir, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g g32F64
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if g.Losses["dpo"] == 0 || len(g.Grads["dpo"]) == 0 {
		t.Fatal("golden.json has no dpo loss or gradients")
	}
	return &g
}

// g32InferenceSums: response log-prob sums from the float32 inference path, keyed like golden.json
// ("policy_chosen_sum", …): policy = base + adapter merged densely, reference = base.
func g32InferenceSums(t *testing.T, c g32Case) map[string][]float64 {
	t.Helper()
	out := map[string][]float64{}
	for _, m := range []struct {
		prefix string
		w      *Weights
	}{{"ref", c.base}, {"policy", MergeMean(c.base, []*Adapter{c.ad})}} {
		inf := NewInference(m.w)
		for _, side := range []struct {
			name string
			resp [][]int
		}{{"chosen", c.chosen}, {"rejected", c.rejected}} {
			sums, _, err := inf.SequenceLogProbs(c.prompts, side.resp)
			if err != nil {
				t.Fatal(err)
			}
			out[m.prefix+"_"+side.name+"_sum"] = sums
		}
	}
	return out
}

// g32Step runs one float32 DPO step (the loss of golden_test.go) with the reference log-probs
// from the float32 training graph itself. It returns the step and the trainer's sums, keyed like
// golden.json.
func g32Step(t *testing.T, c g32Case) (StepOutput, map[string][]float64) {
	t.Helper()
	batch, err := PairBatch(c.prompts, c.chosen, c.rejected)
	if err != nil {
		t.Fatal(err)
	}
	P, seqLen := len(c.prompts), 0
	for _, s := range batch.Tokens {
		seqLen = max(seqLen, len(s))
	}
	tr, err := NewTrainer(c.base, c.ad.Rank, 2*P, seqLen, Objective{Loss: grTestLoss("DPO", c.ref.Beta), Precision: Float32})
	if err != nil {
		t.Fatal(err)
	}
	ref, _, err := tr.LogProbs(nil, batch)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tr.Step(c.ad, batch, ref)
	if err != nil {
		t.Fatal(err)
	}
	return out, map[string][]float64{
		"policy_chosen_sum": out.LogProbs[:P], "policy_rejected_sum": out.LogProbs[P:],
		"ref_chosen_sum": ref[:P], "ref_rejected_sum": ref[P:],
	}
}

// g32SumKeys are the per-sequence sums every reference carries.
var g32SumKeys = []string{"policy_chosen_sum", "policy_rejected_sum", "ref_chosen_sum", "ref_rejected_sum"}

// g32SeqRel is the largest per-sequence relative error |got − want| / |want| over g32SumKeys.
func g32SeqRel(got, want map[string][]float64) float64 {
	var worst float64
	for _, k := range g32SumKeys {
		if len(got[k]) != len(want[k]) {
			return math.Inf(1)
		}
		for i, w := range want[k] {
			worst = math.Max(worst, g32Rel(got[k][i], w))
		}
	}
	return worst
}

// g32NormRel is max |got − want| / max |want| (normwise relative, as precision_test.go's relDiff).
func g32NormRel(got, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i := range want {
		d := math.Abs(got[i] - want[i])
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		num, den = math.Max(num, d), math.Max(den, math.Abs(want[i]))
	}
	return num / math.Max(den, 1e-30)
}

func g32Rel(got, want float64) float64 {
	d := math.Abs(got-want) / math.Abs(want)
	if math.IsNaN(d) {
		return math.Inf(1)
	}
	return d
}

// (a) float32 inference (bpo score's path) vs PyTorch float32 sums.
func TestGolden32SequenceLogProbs(t *testing.T) {
	for _, c := range g32Cases(t) {
		got := g32InferenceSums(t, c)
		for _, k := range g32SumKeys {
			for i, want := range c.ref.LogPs[k] {
				if d := g32Rel(got[k][i], want); d > 1e-4 {
					t.Errorf("%s %s[%d]: Go float32 %.9g, PyTorch float32 %.9g (relative diff %.3g > 1e-4)", c.name, k, i, got[k][i], want, d)
				}
			}
		}
		t.Logf("%s: inference sums, Go f32 vs PyTorch f32: max relative diff %.3g over %d sequences", c.name, g32SeqRel(got, c.ref.LogPs), 4*len(c.prompts))
	}
}

// (b) one float32 DPO step vs PyTorch float32: log-prob sums, loss and every adapter gradient.
func TestGolden32DPOStep(t *testing.T) {
	for _, c := range g32Cases(t) {
		out, sums := g32Step(t, c)
		if d := g32SeqRel(sums, c.ref.LogPs); d > 1e-4 {
			t.Errorf("%s: training-graph sums vs PyTorch f32: max relative diff %.3g > 1e-4", c.name, d)
		} else {
			t.Logf("%s: training-graph sums vs PyTorch f32: max relative diff %.3g", c.name, d)
		}
		want := c.ref.Losses["dpo"]
		if d := g32Rel(out.Loss, want); d > 1e-4 {
			t.Errorf("%s: DPO loss Go f32 %.9g, PyTorch f32 %.9g (relative diff %.3g > 1e-4)", c.name, out.Loss, want, d)
		} else {
			t.Logf("%s: DPO loss Go f32 %.9g, PyTorch f32 %.9g (relative diff %.3g)", c.name, out.Loss, want, d)
		}
		gold := c.ref.Grads["dpo"]
		if len(gold) != len(c.ad.Tensors) || len(out.Grads) != len(c.ad.Tensors) {
			t.Fatalf("%s: %d PyTorch gradients, %d Go gradients, %d adapter tensors", c.name, len(gold), len(out.Grads), len(c.ad.Tensors))
		}
		names := make([]string, 0, len(gold))
		for n := range gold {
			names = append(names, n)
		}
		sort.Strings(names)
		var worst float64
		var worstName string
		for _, n := range names {
			g, ok := out.Grads[n]
			if !ok || fmt.Sprint(g.Shape) != fmt.Sprint(gold[n].Shape) {
				t.Fatalf("%s: gradient %s: Go %v, PyTorch shape %v", c.name, n, g, gold[n].Shape)
			}
			d := g32NormRel(g.Data, gold[n].Data)
			if d > 1e-3 {
				t.Errorf("%s: gradient %s: Go f32 vs PyTorch f32 normwise relative diff %.3g > 1e-3", c.name, n, d)
			}
			if d >= worst {
				worst, worstName = d, n
			}
		}
		t.Logf("%s: %d adapter gradients, Go f32 vs PyTorch f32: worst normwise relative diff %.3g (%s)", c.name, len(names), worst, worstName)
	}
}

// (c) Go float32 and PyTorch float32 against PyTorch float64: Go's float32 error must be of the
// order of PyTorch's own (≤ 10× + 1e-6), and nonzero (else the float32 path is not being tested).
func TestGolden32ErrorVsFloat64(t *testing.T) {
	check := func(name, what string, goErr, torchErr float64) {
		t.Helper()
		t.Logf("%s %s vs PyTorch f64: Go f32 %.3g, PyTorch f32 %.3g", name, what, goErr, torchErr)
		if !(goErr <= 10*torchErr+1e-6) {
			t.Errorf("%s %s: Go float32 error %.3g vs float64 exceeds 10× PyTorch float32's %.3g + 1e-6", name, what, goErr, torchErr)
		}
	}
	for _, c := range g32Cases(t) {
		torchSums := g32SeqRel(c.ref.LogPs, c.f64LogPs)
		inf := g32SeqRel(g32InferenceSums(t, c), c.f64LogPs)
		if inf == 0 {
			t.Errorf("%s: Go float32 inference sums equal the float64 goldens bit for bit: float32 not exercised", c.name)
		}
		check(c.name, "inference sums (max relative)", inf, torchSums)
		out, sums := g32Step(t, c)
		check(c.name, "training sums (max relative)", g32SeqRel(sums, c.f64LogPs), torchSums)
		check(c.name, "DPO loss (relative)", g32Rel(out.Loss, c.f64Loss), g32Rel(c.ref.Losses["dpo"], c.f64Loss))
		if c.name != "golden" {
			continue // golden32 carries no float64 gradients
		}
		// Gradients at golden.json's picks, normwise over the picks.
		picks := g32GoldenF64(t).Grads["dpo"]
		var goV, torchV, f64V []float64
		for _, p := range picks {
			g, tg := out.Grads[p.Name], c.ref.Grads["dpo"][p.Name]
			if g == nil || len(p.Index) != 2 || len(tg.Shape) != 2 {
				t.Fatalf("golden.json pick %s %v: no 2-D gradient", p.Name, p.Index)
			}
			goV = append(goV, g.Data[p.Index[0]*g.Shape[1]+p.Index[1]])
			torchV = append(torchV, tg.Data[p.Index[0]*tg.Shape[1]+p.Index[1]])
			f64V = append(f64V, p.Value)
		}
		check(c.name, fmt.Sprintf("DPO gradients at %d picks (normwise)", len(picks)), g32NormRel(goV, f64V), g32NormRel(torchV, f64V))
	}
}
