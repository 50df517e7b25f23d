package loss

import (
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"testing"
)

// goldenPath is written by hack/golden.py (an independent PyTorch implementation).
const goldenPath = "../model/testdata/golden/golden.json"

type golden struct {
	Beta  float64              `json:"beta"`
	Logps map[string][]float64 `json:"logps"`
	Loss  map[string]float64   `json:"losses"`
}

// TestGoldenLosses checks that Values reproduces PyTorch's batch losses from the
// golden log-probs: DPO and SLiC on summed log-probs, IPO on per-token means ("ipo")
// and on sums ("ipo_sum"), and that Node agrees.
func TestGoldenLosses(t *testing.T) {
	b, err := os.ReadFile(goldenPath)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s not present (run hack/golden.py)", goldenPath)
	}
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	lp := func(s string) (pc, pr, rc, rr []float64) {
		return g.Logps["policy_chosen_"+s], g.Logps["policy_rejected_"+s], g.Logps["ref_chosen_"+s], g.Logps["ref_rejected_"+s]
	}
	for _, c := range []struct {
		key, logps string
		kind       Kind
	}{{"dpo", "sum", DPO}, {"ipo", "mean", IPO}, {"ipo_sum", "sum", IPO}, {"slic", "sum", SLiC}} {
		want, ok := g.Loss[c.key]
		if !ok {
			t.Fatalf("golden.json has no losses.%s", c.key)
		}
		pc, pr, rc, rr := lp(c.logps)
		if len(pc) == 0 || len(pc) != len(pr) || len(pc) != len(rc) || len(pc) != len(rr) {
			t.Fatalf("golden.json logps (%s) are missing or ragged", c.logps)
		}
		got, _ := Values(c.kind, g.Beta, pc, pr, rc, rr)
		node, _, _ := evalNode(t, c.kind, g.Beta, pc, pr, rc, rr)
		t.Logf("%-7s torch %.17g  Values %.17g  Node %.17g", c.key, want, got, node)
		if math.Abs(got-want) > 1e-12*math.Max(1, math.Abs(want)) {
			t.Errorf("%s: Values %.17g, golden %.17g", c.key, got, want)
		}
		if math.Abs(node-want) > 1e-12*math.Max(1, math.Abs(want)) {
			t.Errorf("%s: Node %.17g, golden %.17g", c.key, node, want)
		}
	}
}
