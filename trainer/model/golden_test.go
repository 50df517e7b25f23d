package model

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// TestGoldenTrainingGraph checks the gorgonia training graph against hack/golden.py, an
// independent float64 GPT-2 in PyTorch (see hack/golden/README.md): per-sequence log-probs (policy
// = base + adapter, reference = base), the DPO / IPO (mean and sum) / SLiC losses, selected
// adapter gradients and the base model's last-position logits.
//
// Tolerance: 1e-9 relative (absolute below magnitude 1 for log-probs, losses and logits; for
// gradients relative to the largest golden gradient of that loss). Both sides compute in float64
// from the same F32-stored values, so the only differences are summation order (~1e-14).
func TestGoldenTrainingGraph(t *testing.T) {
	dir := filepath.Join("testdata", "golden")
	if _, err := os.Stat(filepath.Join(dir, "golden.json")); os.IsNotExist(err) {
		t.Skipf("%s/golden.json does not exist yet: generate it with hack/golden.py (hack/golden/README.md)", dir)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var gold struct {
		goldenCommon
		Grads map[string][]struct {
			Name  string  `json:"name"`
			Index []int   `json:"index"`
			Value float64 `json:"value"`
		} `json:"grads"`
		LastLogits [][]float64 `json:"last_logits"`
	}
	if err := json.Unmarshal(raw, &gold); err != nil {
		t.Fatal(err)
	}
	base, err := LoadWeights(dir)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := LoadAdapter(filepath.Join(dir, "adapter.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if ad.Rank != gold.LoRA.Rank || ad.Alpha != gold.LoRA.Alpha {
		t.Fatalf("adapter rank/alpha %d/%g, golden.json says %d/%g", ad.Rank, ad.Alpha, gold.LoRA.Rank, gold.LoRA.Alpha)
	}
	if c := base.Config; c.VocabSize != gold.Config.VocabSize || c.NEmbd != gold.Config.NEmbd || c.NLayer != gold.Config.NLayer || c.NHead != gold.Config.NHead {
		t.Fatalf("config.json %+v disagrees with golden.json %+v", c, gold.Config)
	}

	const tol = 1e-9
	check := func(what string, got, want, scale float64) {
		t.Helper()
		if d := math.Abs(got - want); d > tol*math.Max(scale, math.Abs(want)) || math.IsNaN(got) {
			t.Errorf("%s: got %.15g, golden %.15g (|diff| %.3g)", what, got, want, d)
		}
	}

	P := len(gold.Pairs)
	prompts, chosen, rejected := make([][]int, P), make([][]int, P), make([][]int, P)
	seqLen := 0
	for i, p := range gold.Pairs {
		prompts[i], chosen[i], rejected[i] = p.Prompt, p.Chosen, p.Rejected
		seqLen = max(seqLen, len(p.Prompt)+max(len(p.Chosen), len(p.Rejected)))
	}
	batch, err := PairBatch(prompts, chosen, rejected)
	if err != nil {
		t.Fatal(err)
	}

	// log-probs
	scorer, err := NewTrainer(base, ad.Rank, 2*P, seqLen, Objective{Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	pol, counts, err := scorer.LogProbs(ad, batch)
	if err != nil {
		t.Fatal(err)
	}
	ref, _, err := scorer.LogProbs(nil, batch)
	if err != nil {
		t.Fatal(err)
	}
	var worst float64
	for i := 0; i < P; i++ {
		for _, c := range []struct {
			key  string
			vals []float64
			row  int
			mean bool
		}{
			{"policy_chosen_sum", pol, i, false}, {"policy_rejected_sum", pol, P + i, false},
			{"policy_chosen_mean", pol, i, true}, {"policy_rejected_mean", pol, P + i, true},
			{"ref_chosen_sum", ref, i, false}, {"ref_rejected_sum", ref, P + i, false},
			{"ref_chosen_mean", ref, i, true}, {"ref_rejected_mean", ref, P + i, true},
		} {
			got := c.vals[c.row]
			if c.mean {
				got /= float64(counts[c.row])
			}
			want := gold.LogPs[c.key][i]
			worst = math.Max(worst, math.Abs(got-want)/math.Max(1, math.Abs(want)))
			check(c.key, got, want, 1)
		}
	}
	t.Logf("log-probs: max relative difference %.3g over %d values", worst, 8*P)

	// last-position logits of prompt+chosen of pair 0, base model
	logits, err := scorer.Logits(nil, batch)
	if err != nil {
		t.Fatal(err)
	}
	V := base.Config.VocabSize
	n0 := len(batch.Tokens[0])
	worst = 0
	for k, row := range gold.LastLogits {
		pos := n0 - len(gold.LastLogits) + k
		for v, want := range row {
			got := logits.Data[pos*V+v]
			worst = math.Max(worst, math.Abs(got-want)/math.Max(1, math.Abs(want)))
			check("last_logits", got, want, 1)
		}
	}
	t.Logf("last logits: max relative difference %.3g", worst)

	// losses and gradients
	refSums := ref
	for _, lc := range []struct {
		key, kind, grads string
		lenNorm          bool
	}{
		{"dpo", "DPO", "dpo", false}, {"ipo", "IPO", "ipo", true}, {"ipo_sum", "IPO", "", false}, {"slic", "SLiC", "slic", false},
	} {
		tr, err := NewTrainer(base, ad.Rank, 2*P, seqLen, Objective{Loss: grTestLoss(lc.kind, gold.Beta), LengthNormalize: lc.lenNorm, Precision: Float64})
		if err != nil {
			t.Fatal(err)
		}
		out, err := tr.Step(ad, batch, refSums)
		if err != nil {
			t.Fatal(err)
		}
		want, ok := gold.Losses[lc.key]
		if !ok {
			t.Fatalf("golden.json has no losses.%s", lc.key)
		}
		t.Logf("%s: loss %.15g, golden %.15g (diff %.3g)", lc.key, out.Loss, want, math.Abs(out.Loss-want))
		check("loss "+lc.key, out.Loss, want, 1)
		if lc.grads == "" {
			continue
		}
		entries := gold.Grads[lc.grads]
		if len(entries) == 0 {
			t.Fatalf("golden.json has no grads.%s", lc.grads)
		}
		var scale float64
		for _, e := range entries {
			scale = math.Max(scale, math.Abs(e.Value))
		}
		worst = 0
		for _, e := range entries {
			g, ok := out.Grads[e.Name]
			if !ok || len(e.Index) != 2 || len(g.Shape) != 2 {
				t.Fatalf("grads.%s: no 2-D gradient for %s %v", lc.grads, e.Name, e.Index)
			}
			got := g.Data[e.Index[0]*g.Shape[1]+e.Index[1]]
			worst = math.Max(worst, math.Abs(got-e.Value)/math.Max(scale, math.Abs(e.Value)))
			check("grad "+lc.grads+" "+e.Name, got, e.Value, scale)
		}
		t.Logf("%s: %d gradients, max relative difference %.3g", lc.grads, len(entries), worst)
	}
}

// goldenCommon is what every golden file of hack/golden.py holds (golden.json and the float32
// ones): the model config, the LoRA adapter's shape, beta, the preference pairs, and PyTorch's
// sequence log-probs and losses per loss type.
type goldenCommon struct {
	Config Config `json:"config"`
	LoRA   struct {
		Rank  int     `json:"rank"`
		Alpha float64 `json:"alpha"`
	} `json:"lora"`
	Beta  float64 `json:"beta"`
	Pairs []struct {
		Prompt   []int `json:"prompt"`
		Chosen   []int `json:"chosen"`
		Rejected []int `json:"rejected"`
	} `json:"pairs"`
	LogPs  map[string][]float64 `json:"logps"`
	Losses map[string]float64   `json:"losses"`
}
