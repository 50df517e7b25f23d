package pretrain

import (
	"testing"

	"github.com/bpo-dev/bpo/trainer/optim"
)

// TestOptimizer: weight decay goes to matrices only, and the schedule warms up to LR and
// takes the last step at the floor.
func TestOptimizer(t *testing.T) {
	for name, want := range map[string]bool{
		"wte.weight": true, "wpe.weight": true, "h.0.mlp.c_fc.weight": true, "h.1.attn.c_attn.lora_B": true, "h.0.attn.c_proj.lora_A": true,
		"h.0.mlp.c_fc.bias": false, "ln_f.weight": false, "h.0.ln_1.weight": false, "h.0.ln_2.bias": false,
	} {
		if decays(name) != want {
			t.Errorf("decays(%q) = %v", name, !want)
		}
	}
	o, err := LMOptions{Steps: 100, LR: 2e-3, WeightDecay: 0.1}.withDefaults(32)
	if err != nil {
		t.Fatal(err)
	}
	if o.Warmup != 5 || o.MinLRRatio != 0.1 || o.Schedule != optim.Cosine {
		t.Fatalf("defaults: %+v", o)
	}
	opt, err := optim.New(o.optimConfig())
	if err != nil {
		t.Fatal(err)
	}
	if opt.WeightDecay("h.0.mlp.c_proj.weight") != 0.1 || opt.WeightDecay("h.0.mlp.c_proj.bias") != 0 {
		t.Error("weight decay groups")
	}
	for s, want := range map[int]float64{0: 2e-3 / 5, 4: 2e-3, 5: 2e-3, 99: 2e-4} {
		if got := opt.LRAt(s); got != want {
			t.Errorf("LRAt(%d) = %.17g, want %.17g", s, got, want)
		}
	}
	// one step: at LR
	if o, _ := (LMOptions{Steps: 1, LR: 1}).withDefaults(32); o.optimConfig().LRAt(0) != 1 {
		t.Errorf("one-step run at %v", o.optimConfig().LRAt(0))
	}
	for _, bad := range []LMOptions{{Steps: 10, Schedule: "step"}, {Steps: 10, MinLRRatio: 2}, {Steps: 10, WeightDecay: -1}, {Steps: 10, Warmup: 10}, {Steps: 10, Layout: "rows"}} {
		if _, err := bad.withDefaults(32); err == nil {
			t.Errorf("%+v accepted", bad)
		} else {
			t.Log(err)
		}
	}
}
