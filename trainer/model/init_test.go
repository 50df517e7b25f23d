package model

import (
	"math"
	"strings"
	"testing"
)

func mtStd(x []float64) (mean, std float64) {
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	for _, v := range x {
		std += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(std / float64(len(x)))
}

func TestInitGPT2(t *testing.T) {
	cfg := mtConfig(257, 128, 64, 4, 4)
	w := Init(cfg, 7)
	if err := w.Validate(); err != nil {
		t.Fatal(err)
	}
	again := Init(cfg, 7)
	mtEqualTensors(t, again.Tensors, w.Tensors)
	other := Init(cfg, 8)
	if other.Tensors["wte.weight"].Data[0] == w.Tensors["wte.weight"].Data[0] {
		t.Fatal("different seeds give the same weights")
	}
	resid := 0.02 / math.Sqrt(8)
	for name, ten := range w.Tensors {
		switch {
		case strings.Contains(name, "ln_") && strings.HasSuffix(name, ".weight"):
			for _, v := range ten.Data {
				if v != 1 {
					t.Fatalf("%s not 1", name)
				}
			}
		case strings.HasSuffix(name, ".bias"):
			for _, v := range ten.Data {
				if v != 0 {
					t.Fatalf("%s not 0", name)
				}
			}
		default:
			want := 0.02
			if strings.HasSuffix(name, "c_proj.weight") {
				want = resid
			}
			mean, std := mtStd(ten.Data)
			n := float64(len(ten.Data))
			if math.Abs(std-want) > 5*want/math.Sqrt(2*n) || math.Abs(mean) > 5*want/math.Sqrt(n) {
				t.Errorf("%s: mean %.5f std %.5f, want std %.5f", name, mean, std, want)
			}
		}
	}
	// A tensor's values do not depend on the other tensors of the model.
	deeper := Init(mtConfig(257, 128, 64, 6, 4), 7)
	mtEqualTensors(t, map[string]*Tensor{"wte": deeper.Tensors["wte.weight"]}, map[string]*Tensor{"wte": w.Tensors["wte.weight"]})
}

func TestNewAdapter(t *testing.T) {
	cfg := mtConfig(257, 128, 64, 2, 4)
	a := NewAdapter(cfg, 8, 16, 3)
	if err := a.Validate(cfg); err != nil {
		t.Fatal(err)
	}
	if len(a.Tensors) != 2*len(LoRATargets)*cfg.NLayer || a.Scale() != 2 {
		t.Fatalf("%d tensors, scale %v", len(a.Tensors), a.Scale())
	}
	mtEqualTensors(t, NewAdapter(cfg, 8, 16, 3).Tensors, a.Tensors)
	for name, ten := range a.Tensors {
		if strings.HasSuffix(name, "lora_B") {
			for _, v := range ten.Data {
				if v != 0 {
					t.Fatalf("%s is not zero", name)
				}
			}
			continue
		}
		want := 1 / math.Sqrt(float64(ten.Shape[0]))
		_, std := mtStd(ten.Data)
		if math.Abs(std-want) > 5*want/math.Sqrt(2*float64(len(ten.Data))) {
			t.Errorf("%s: std %.4f, want %.4f", name, std, want)
		}
	}
	if NewAdapter(cfg, 8, 16, 4).Tensors["h.0.attn.c_attn.lora_A"].Data[0] == a.Tensors["h.0.attn.c_attn.lora_A"].Data[0] {
		t.Fatal("different seeds give the same adapter")
	}
}
