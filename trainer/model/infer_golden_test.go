package model

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// mtGolden is the part of testdata/golden/golden.json (written by hack/golden.py, an
// independent float64 PyTorch GPT-2) that the inference path is checked against.
type mtGolden struct {
	Lora struct {
		Rank  int     `json:"rank"`
		Alpha float64 `json:"alpha"`
	} `json:"lora"`
	Pairs []struct {
		Prompt   []int `json:"prompt"`
		Chosen   []int `json:"chosen"`
		Rejected []int `json:"rejected"`
	} `json:"pairs"`
	Logps      map[string][]float64 `json:"logps"`
	LastLogits [][]float64          `json:"last_logits"`
}

const mtGoldenDir = "testdata/golden"

func mtLoadGolden(t *testing.T) (*mtGolden, *Weights, *Adapter) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(mtGoldenDir, "golden.json")); err != nil {
		t.Skipf("golden vectors not present (%v); generate them with /usr/bin/python3 hack/golden.py", err)
	}
	b, err := os.ReadFile(filepath.Join(mtGoldenDir, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g mtGolden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("golden.json: %v", err)
	}
	if len(g.Pairs) == 0 || len(g.LastLogits) == 0 {
		t.Fatalf("golden.json has no pairs or no last_logits")
	}
	w, err := LoadWeights(mtGoldenDir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := LoadAdapterFor(filepath.Join(mtGoldenDir, "adapter.safetensors"), w.Config)
	if err != nil {
		t.Fatal(err)
	}
	if a.Rank != g.Lora.Rank || a.Alpha != g.Lora.Alpha {
		t.Fatalf("adapter rank %d alpha %v, golden.json says %d, %v", a.Rank, a.Alpha, g.Lora.Rank, g.Lora.Alpha)
	}
	return &g, w, a
}

// mtRelClose compares with a relative tolerance (absolute near zero).
func mtRelClose(t *testing.T, what string, got, want []float64, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, golden has %d", what, len(got), len(want))
	}
	worst := 0.0
	for i := range want {
		d := math.Abs(got[i]-want[i]) / math.Max(math.Abs(want[i]), 1e-3)
		if !(d <= rel) {
			t.Fatalf("%s[%d] = %.17g, golden %.17g (relative diff %.3g)", what, i, got[i], want[i], d)
		}
		worst = max(worst, d)
	}
	t.Logf("%s: %d values, worst relative diff %.2g", what, len(want), worst)
}

func TestGoldenLastLogits(t *testing.T) {
	g, w, _ := mtLoadGolden(t)
	m := NewInferenceAt(w, Float64)
	p := g.Pairs[0]
	seq := append(append([]int(nil), p.Prompt...), p.Chosen...)
	full := m.Logits(seq)
	mtRelClose(t, "last_logits (no cache)", full[len(seq)-1], g.LastLogits[0], 1e-9)
	// The KV-cache path: prefill the prompt, step the response.
	c := m.NewCache(2)
	c.Prefill(1, p.Prompt)
	var last []float64
	for _, tok := range p.Chosen {
		last = c.Step([]int{1}, []int{tok})[0]
	}
	mtRelClose(t, "last_logits (cache)", last, g.LastLogits[0], 1e-9)
}

func TestGoldenSequenceLogProbs(t *testing.T) {
	g, w, a := mtLoadGolden(t)
	var prompts, chosen, rejected [][]int
	for _, p := range g.Pairs {
		prompts = append(prompts, p.Prompt)
		chosen = append(chosen, p.Chosen)
		rejected = append(rejected, p.Rejected)
	}
	for _, model := range []struct {
		prefix string
		w      *Weights
	}{
		{"ref", w},                              // reference = base
		{"policy", MergeMean(w, []*Adapter{a})}, // policy = base + adapter, merged densely
	} {
		m := NewInferenceAt(model.w, Float64)
		for _, side := range []struct {
			name string
			resp [][]int
		}{{"chosen", chosen}, {"rejected", rejected}} {
			sums, counts, err := m.SequenceLogProbs(prompts, side.resp)
			if err != nil {
				t.Fatal(err)
			}
			key := model.prefix + "_" + side.name
			want, ok := g.Logps[key+"_sum"]
			if !ok {
				t.Fatalf("golden.json logps has no %s_sum", key)
			}
			mtRelClose(t, key+"_sum", sums, want, 1e-9)
			if wantMean, ok := g.Logps[key+"_mean"]; ok {
				means := make([]float64, len(sums))
				for i := range sums {
					means[i] = sums[i] / float64(counts[i])
				}
				mtRelClose(t, key+"_mean", means, wantMean, 1e-9)
			}
		}
	}
}

// TestGoldenFilesRoundTrip: the golden F32 files survive our save/load bit-exactly.
func TestGoldenFilesRoundTrip(t *testing.T) {
	_, w, a := mtLoadGolden(t)
	dir := t.TempDir()
	if err := SaveWeights(dir, w); err != nil {
		t.Fatal(err)
	}
	w2, err := LoadWeights(dir)
	if err != nil {
		t.Fatal(err)
	}
	mtEqualTensors(t, w2.Tensors, w.Tensors)
	if err := SaveAdapter(filepath.Join(dir, "adapter.safetensors"), a); err != nil {
		t.Fatal(err)
	}
	a2, err := LoadAdapterFor(filepath.Join(dir, "adapter.safetensors"), w.Config)
	if err != nil {
		t.Fatal(err)
	}
	mtEqualTensors(t, a2.Tensors, a.Tensors)
}
