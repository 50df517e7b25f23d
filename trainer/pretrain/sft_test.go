package pretrain

import "testing"

// TestSFTAdapters: N distinct adapters of the right shapes, deterministic, each lowering the
// held-out loss of the SFT texts.
func TestSFTAdapters(t *testing.T) {
	tk := reviewsTask(t)
	cfg := tinyConfig()
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
	baseHeld, err := HeldOutNatsPerByte(base, nil, nil, texts, 4)
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
