package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

func mtRandomAdapter(cfg Config, rank int, alpha float64, seed uint64) *Adapter {
	a := NewAdapter(cfg, rank, alpha, int64(seed))
	r := rand.New(rand.NewPCG(seed, 5))
	for _, ten := range a.Tensors {
		for i := range ten.Data {
			ten.Data[i] = r.NormFloat64() * 0.3
		}
	}
	return a
}

func TestMergeMeanIsExactMeanOfDeltas(t *testing.T) {
	cfg := mtConfig(31, 16, 12, 2, 3)
	base := mtRandomWeights(cfg, 3, 0.2)
	baseCopy := base.Clone()
	adapters := []*Adapter{
		mtRandomAdapter(cfg, 4, 8, 1),
		mtRandomAdapter(cfg, 4, 8, 2),
		mtRandomAdapter(cfg, 4, 8, 3),
	}
	merged := MergeMean(base, adapters)
	mtEqualTensors(t, base.Tensors, baseCopy.Tensors) // base untouched
	maxShortcutDiff := 0.0
	for l := 0; l < cfg.NLayer; l++ {
		for _, tg := range LoRATargets {
			prefix := "h." + string(rune('0'+l)) + "." + tg
			W0 := base.Tensors[prefix+".weight"].Data
			W := merged.Tensors[prefix+".weight"].Data
			// Mean of the members' dense deltas, computed naively.
			in, out, _ := cfg.TargetShape(tg)
			mean := make([]float64, in*out)
			for _, a := range adapters {
				A, B := a.Tensors[prefix+".lora_A"].Data, a.Tensors[prefix+".lora_B"].Data
				for i := 0; i < in; i++ {
					for j := 0; j < out; j++ {
						var s float64
						for k := 0; k < a.Rank; k++ {
							s += A[i*a.Rank+k] * B[k*out+j]
						}
						mean[i*out+j] += a.Scale() * s / float64(len(adapters))
					}
				}
			}
			// The factor-averaging shortcut: scale·mean(A)·mean(B).
			r := adapters[0].Rank
			shortcut := make([]float64, in*out)
			for i := 0; i < in; i++ {
				for j := 0; j < out; j++ {
					var s float64
					for k := 0; k < r; k++ {
						var a, b float64
						for _, ad := range adapters {
							a += ad.Tensors[prefix+".lora_A"].Data[i*r+k]
							b += ad.Tensors[prefix+".lora_B"].Data[k*out+j]
						}
						s += a / 3 * b / 3
					}
					shortcut[i*out+j] = adapters[0].Scale() * s
				}
			}
			for i := range W {
				if d := math.Abs((W[i] - W0[i]) - mean[i]); d > 1e-12 {
					t.Fatalf("%s[%d]: merged delta %v, mean of deltas %v", prefix, i, W[i]-W0[i], mean[i])
				}
				maxShortcutDiff = max(maxShortcutDiff, math.Abs(mean[i]-shortcut[i]))
			}
		}
	}
	if maxShortcutDiff < 1e-2 {
		t.Fatalf("mean of deltas equals the factor-averaging shortcut (max diff %g); the test example is degenerate", maxShortcutDiff)
	}
	// Non-target tensors are the base's.
	for _, name := range []string{"wte.weight", "h.0.attn.c_attn.bias", "ln_f.weight"} {
		mtEqualTensors(t, map[string]*Tensor{name: merged.Tensors[name]}, map[string]*Tensor{name: base.Tensors[name]})
	}
	// One adapter: the merged model is base + its delta; zero adapters: a copy of base.
	one := MergeMean(base, adapters[:1])
	d := adapters[0].Delta("h.1.mlp.c_fc")
	for i, v := range d.Data {
		if math.Abs(one.Tensors["h.1.mlp.c_fc.weight"].Data[i]-base.Tensors["h.1.mlp.c_fc.weight"].Data[i]-v) > 1e-14 {
			t.Fatal("single-adapter merge differs from its delta")
		}
	}
	mtEqualTensors(t, MergeMean(base, nil).Tensors, base.Tensors)
	// Members may differ in rank and alpha.
	mixed := MergeMean(base, []*Adapter{mtRandomAdapter(cfg, 2, 1, 7), mtRandomAdapter(cfg, 5, 20, 8)})
	if err := mixed.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestMergeMeanMatchesLoRAForward(t *testing.T) {
	// With one adapter, the merged dense model computes W_eff = W + (alpha/r)·A·B:
	// x·W_eff equals x·W + scale·(x·A)·B.
	cfg := mtConfig(31, 16, 12, 1, 3)
	base := mtRandomWeights(cfg, 4, 0.2)
	a := mtRandomAdapter(cfg, 3, 5, 9)
	merged := MergeMean(base, []*Adapter{a})
	in, out, _ := cfg.TargetShape("mlp.c_proj")
	x := make([]float64, in)
	for i := range x {
		x[i] = math.Sin(float64(i))
	}
	W := base.Tensors["h.0.mlp.c_proj.weight"].Data
	We := merged.Tensors["h.0.mlp.c_proj.weight"].Data
	A, B := a.Tensors["h.0.mlp.c_proj.lora_A"].Data, a.Tensors["h.0.mlp.c_proj.lora_B"].Data
	xa := make([]float64, a.Rank)
	for k := range xa {
		for i := range x {
			xa[k] += x[i] * A[i*a.Rank+k]
		}
	}
	for j := 0; j < out; j++ {
		var y1, y2 float64
		for i := range x {
			y1 += x[i] * We[i*out+j]
			y2 += x[i] * W[i*out+j]
		}
		for k := range xa {
			y2 += a.Scale() * xa[k] * B[k*out+j]
		}
		if math.Abs(y1-y2) > 1e-12 {
			t.Fatalf("output %d: merged %v, LoRA %v", j, y1, y2)
		}
	}
}

func TestApplyEMA(t *testing.T) {
	cfg := mtConfig(31, 16, 12, 1, 3)
	ref, merged := mtRandomWeights(cfg, 1, 1), mtRandomWeights(cfg, 2, 1)
	refCopy := ref.Clone()
	got := ApplyEMA(ref, merged, 0.25)
	mtEqualTensors(t, ref.Tensors, refCopy.Tensors)
	for name, r := range ref.Tensors {
		for i, v := range r.Data {
			want := 0.75*v + 0.25*merged.Tensors[name].Data[i]
			if math.Abs(got.Tensors[name].Data[i]-want) > 1e-15 {
				t.Fatalf("%s[%d] = %v want %v", name, i, got.Tensors[name].Data[i], want)
			}
		}
	}
	mtEqualTensors(t, ApplyEMA(ref, merged, 0).Tensors, ref.Tensors)
	mtEqualTensors(t, ApplyEMA(ref, merged, 1).Tensors, merged.Tensors)
}
