package model

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// mtF32Members are n random adapters of one rank and alpha with float32-representable values
// (what member files hold), so that writing them as F32 loses nothing.
func mtF32Members(cfg Config, n, rank int, alpha float64) []*Adapter {
	ms := make([]*Adapter, n)
	for m := range ms {
		ms[m] = mtRandomAdapter(cfg, rank, alpha, uint64(100+m))
		mtRound32(ms[m].Tensors)
	}
	return ms
}

// mtMaxDiff is the largest absolute difference between same-named tensors, and the largest
// absolute value of want.
func mtMaxDiff(t *testing.T, got, want map[string]*Tensor) (diff, scale float64) {
	t.Helper()
	for name, w := range want {
		g := got[name]
		if g == nil || !slices.Equal(g.Shape, w.Shape) {
			t.Fatalf("tensor %s missing or of another shape", name)
		}
		for i := range w.Data {
			diff = max(diff, math.Abs(g.Data[i]-w.Data[i]))
			scale = max(scale, math.Abs(w.Data[i]))
		}
	}
	return diff, scale
}

// mtDeltas are the dense deltas merged minus base on every LoRA target.
func mtDeltas(base, merged *Weights) map[string]*Tensor {
	out := map[string]*Tensor{}
	for name, b := range base.Tensors {
		if !strings.HasSuffix(name, ".weight") || !slices.ContainsFunc(LoRATargets, func(t string) bool { return strings.HasSuffix(name, t+".weight") }) {
			continue
		}
		d := b.Clone()
		for i := range d.Data {
			d.Data[i] = merged.Tensors[name].Data[i] - b.Data[i]
		}
		out[name] = d
	}
	return out
}

func TestEnsembleAdapterAsPEFTEqualsDenseMerge(t *testing.T) {
	cfg := mtConfig(31, 16, 12, 2, 3)
	base := mtRandomWeights(cfg, 3, 0.2)
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) {
			members := mtF32Members(cfg, n, 4, 8)
			ens, err := EnsembleAdapter(members)
			if err != nil {
				t.Fatal(err)
			}
			// A homogeneous ensemble keeps alpha: alpha/(N·r) is the members' scale over N.
			if ens.Rank != 4*n || ens.Alpha != 8 {
				t.Fatalf("ensemble adapter rank %d alpha %g, want %d and 8", ens.Rank, ens.Alpha, 4*n)
			}
			dir := filepath.Join(t.TempDir(), "policy")
			if err := SavePEFT(dir, ens, cfg, "base"); err != nil {
				t.Fatal(err)
			}
			got, err := LoadPEFT(dir, cfg)
			if err != nil {
				t.Fatal(err)
			}
			// The factors are the members' float32 values, so the round trip is exact.
			mtEqualTensors(t, got.Tensors, ens.Tensors)
			if got.Rank != ens.Rank || got.Alpha != ens.Alpha {
				t.Fatalf("read back rank %d alpha %g, wrote %d and %g", got.Rank, got.Alpha, ens.Rank, ens.Alpha)
			}
			want := mtDeltas(base, MergeMean(base, members))
			diff, scale := mtMaxDiff(t, mtDeltas(base, MergeMean(base, []*Adapter{got})), want)
			if diff > 1e-14*max(scale, 1) || scale < 1e-3 {
				t.Fatalf("base + adapter differs from the dense merge by %g (delta scale %g)", diff, scale)
			}
		})
	}
}

func TestEnsembleAdapterMixedRanksAndAlphas(t *testing.T) {
	cfg := mtConfig(31, 16, 12, 2, 3)
	base := mtRandomWeights(cfg, 3, 0.2)
	members := []*Adapter{mtRandomAdapter(cfg, 2, 1, 7), mtRandomAdapter(cfg, 5, 20, 8), mtRandomAdapter(cfg, 3, 6, 9)}
	// Member 1 covers only one target: elsewhere it contributes zero.
	for name := range members[1].Tensors {
		if !strings.Contains(name, "h.1.mlp.c_fc.") {
			delete(members[1].Tensors, name)
		}
	}
	ens, err := EnsembleAdapter(members)
	if err != nil {
		t.Fatal(err)
	}
	if ens.Rank != 10 {
		t.Fatalf("rank %d, want 2+5+3", ens.Rank)
	}
	want := mtDeltas(base, MergeMean(base, members))
	// In float64 (no file): exact up to the rounding of the rescaled B.
	diff, scale := mtMaxDiff(t, mtDeltas(base, MergeMean(base, []*Adapter{ens})), want)
	if diff > 1e-13*scale {
		t.Fatalf("in memory: differs by %g (scale %g)", diff, scale)
	}
	dir := t.TempDir()
	if err := SavePEFT(dir, ens, cfg, "base"); err != nil {
		t.Fatal(err)
	}
	got, err := LoadPEFT(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Through an F32 file: float32 rounding of the rescaled factors.
	diff, scale = mtMaxDiff(t, mtDeltas(base, MergeMean(base, []*Adapter{got})), want)
	if diff > 1e-6*scale {
		t.Fatalf("through the file: differs by %g (scale %g)", diff, scale)
	}
}

func TestEnsembleAdapterRejects(t *testing.T) {
	cfg := mtConfig(31, 16, 12, 2, 3)
	other := mtConfig(31, 16, 24, 2, 3)
	for _, c := range []struct {
		name    string
		members []*Adapter
		want    string
	}{
		{"none", nil, "no members"},
		{"bad member", []*Adapter{NewAdapter(cfg, 2, 4, 1), {Rank: 0, Alpha: 1}}, "member 1: adapter: rank must be > 0"},
		{"other widths", []*Adapter{NewAdapter(cfg, 2, 4, 1), NewAdapter(other, 2, 4, 1)}, "member 1: h.0.attn.c_attn is [24, 72], an earlier member has [12, 36]"},
	} {
		if _, err := EnsembleAdapter(c.members); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

// TestPEFTLayoutGolden checks the files against what PEFT's save_pretrained writes for a
// GPT2LMHeadModel with LoRA on c_attn, c_proj and c_fc: the state-dict keys (module path under
// base_model.model, lora_A/lora_B as nn.Linear weights [r, in] and [out, r]) and the config, and
// that PEFT's forward of the LoRA branch, computed from the raw file tensors as PEFT computes it
// (x·W + scale·lora_B(lora_A(x)), scale = lora_alpha/r), equals the dense merged layer.
func TestPEFTLayoutGolden(t *testing.T) {
	cfg := mtConfig(31, 16, 12, 2, 3)
	base := mtRandomWeights(cfg, 5, 0.2)
	members := mtF32Members(cfg, 2, 3, 6)
	ens, err := EnsembleAdapter(members)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := SavePEFT(dir, ens, cfg, "trainer/task/models/tiny"); err != nil {
		t.Fatal(err)
	}
	raw, meta, err := LoadTensors(filepath.Join(dir, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if meta["format"] != "pt" {
		t.Errorf("__metadata__ %v, want format pt", meta)
	}
	// d = 12, R = 2·3 = 6.
	want := map[string][]int{}
	for l := 0; l < 2; l++ {
		p := fmt.Sprintf("base_model.model.transformer.h.%d.", l)
		want[p+"attn.c_attn.lora_A.weight"] = []int{6, 12}
		want[p+"attn.c_attn.lora_B.weight"] = []int{36, 6}
		want[p+"attn.c_proj.lora_A.weight"] = []int{6, 12}
		want[p+"attn.c_proj.lora_B.weight"] = []int{12, 6}
		want[p+"mlp.c_fc.lora_A.weight"] = []int{6, 12}
		want[p+"mlp.c_fc.lora_B.weight"] = []int{48, 6}
		want[p+"mlp.c_proj.lora_A.weight"] = []int{6, 48}
		want[p+"mlp.c_proj.lora_B.weight"] = []int{12, 6}
	}
	if len(raw) != len(want) {
		t.Fatalf("%d tensors, want %d", len(raw), len(want))
	}
	for k, shape := range want {
		if raw[k] == nil || !slices.Equal(raw[k].Shape, shape) {
			t.Fatalf("tensor %s: got %v, want shape %v", k, raw[k], shape)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	wantCfg := map[string]any{
		"peft_type": "LORA", "r": 6.0, "lora_alpha": 6.0, "task_type": "CAUSAL_LM",
		"target_modules": []any{"c_attn", "c_fc", "c_proj"}, "fan_in_fan_out": true,
		"base_model_name_or_path": "trainer/task/models/tiny", "bias": "none", "use_rslora": false,
		"use_dora": false, "inference_mode": true, "lora_dropout": 0.0, "modules_to_save": nil,
		"rank_pattern": map[string]any{}, "alpha_pattern": map[string]any{}, "layers_to_transform": nil,
	}
	for k, v := range wantCfg {
		if !reflect.DeepEqual(c[k], v) {
			t.Errorf("adapter_config.json %s = %#v, want %#v", k, c[k], v)
		}
	}
	// PEFT's forward through h.1.mlp.c_proj (in 48, out 12) against the merged dense weight.
	merged := MergeMean(base, members)
	in, out := 48, 12
	A := raw["base_model.model.transformer.h.1.mlp.c_proj.lora_A.weight"].Data // [R, in]
	B := raw["base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight"].Data // [out, R]
	W0, W := base.Tensors["h.1.mlp.c_proj.weight"].Data, merged.Tensors["h.1.mlp.c_proj.weight"].Data
	scale := c["lora_alpha"].(float64) / c["r"].(float64)
	x := make([]float64, in)
	for i := range x {
		x[i] = math.Cos(float64(3 * i))
	}
	h := make([]float64, 6)
	for k := range h {
		for i := range x {
			h[k] += A[k*in+i] * x[i]
		}
	}
	for j := 0; j < out; j++ {
		var peft, dense float64
		for i := range x {
			peft += x[i] * W0[i*out+j]
			dense += x[i] * W[i*out+j]
		}
		for k := range h {
			peft += scale * B[j*6+k] * h[k]
		}
		if math.Abs(peft-dense) > 1e-12 {
			t.Fatalf("output %d: PEFT forward %v, dense merge %v", j, peft, dense)
		}
	}
}

// TestEnsembleAdapterOfTinyReviews writes the bundled model's first three SFT members as one
// adapter and checks it against the dense merge the trainer computes.
func TestEnsembleAdapterOfTinyReviews(t *testing.T) {
	dir := "../task/models/tiny-reviews"
	base, err := LoadWeights(dir)
	if err != nil {
		t.Fatal(err)
	}
	var members []*Adapter
	for m := 0; m < 3; m++ {
		a, err := LoadAdapterFor(filepath.Join(dir, "adapters", fmt.Sprintf("member-%d.safetensors", m)), base.Config)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, a)
	}
	ens, err := EnsembleAdapter(members)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := SavePEFT(out, ens, base.Config, dir); err != nil {
		t.Fatal(err)
	}
	got, err := LoadPEFT(out, base.Config)
	if err != nil {
		t.Fatal(err)
	}
	if got.Rank != 24 || got.Alpha != 16 {
		t.Fatalf("rank %d alpha %g, want 24 and 16", got.Rank, got.Alpha)
	}
	want := mtDeltas(base, MergeMean(base, members))
	diff, scale := mtMaxDiff(t, mtDeltas(base, MergeMean(base, []*Adapter{got})), want)
	if diff > 1e-14*scale || scale == 0 {
		t.Fatalf("differs from the dense merge by %g (delta scale %g)", diff, scale)
	}
}

func TestPEFTTargetModules(t *testing.T) {
	cfg := mtConfig(31, 16, 12, 2, 3)
	only := func(targets ...string) *Adapter {
		a := NewAdapter(cfg, 2, 4, 1)
		for name := range a.Tensors {
			if !slices.ContainsFunc(targets, func(tg string) bool { return strings.Contains(name, "."+tg+".") }) {
				delete(a.Tensors, name)
			}
		}
		return a
	}
	for _, c := range []struct {
		targets []string
		want    []string
	}{
		{LoRATargets, []string{"c_attn", "c_fc", "c_proj"}},
		{[]string{"attn.c_attn"}, []string{"c_attn"}},
		{[]string{"attn.c_attn", "attn.c_proj"}, []string{"attn.c_proj", "c_attn"}},
		{[]string{"mlp.c_proj", "mlp.c_fc"}, []string{"c_fc", "mlp.c_proj"}},
		{[]string{"attn.c_proj", "mlp.c_proj"}, []string{"c_proj"}},
	} {
		if got := PEFTTargetModules(only(c.targets...)); !slices.Equal(got, c.want) {
			t.Errorf("%v: target_modules %v, want %v", c.targets, got, c.want)
		}
	}
}

func TestLoadPEFTSettingsAndErrors(t *testing.T) {
	cfg := mtConfig(31, 16, 12, 2, 3)
	a := mtF32Members(cfg, 1, 4, 8)[0]
	write := func(t *testing.T, edit func(c map[string]any), rename func(string) string) string {
		t.Helper()
		dir := t.TempDir()
		if err := SavePEFT(dir, a, cfg, "base"); err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			p := filepath.Join(dir, PEFTConfigFileName)
			b, _ := os.ReadFile(p)
			var c map[string]any
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			edit(c)
			b, _ = json.Marshal(c)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if rename != nil {
			p := filepath.Join(dir, PEFTWeightsFileName)
			ts, _, err := LoadTensors(p)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]*Tensor{}
			for k, v := range ts {
				out[rename(k)] = v
			}
			if err := SaveTensors(p, out, nil); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	t.Run("rslora scale and unprefixed keys", func(t *testing.T) {
		dir := write(t, func(c map[string]any) { c["use_rslora"] = true; c["target_modules"] = ".*c_attn" },
			func(k string) string { return strings.TrimPrefix(k, "base_model.model.transformer.") })
		got, err := LoadPEFT(dir, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if want := 8 / math.Sqrt(4); math.Abs(got.Scale()-want) > 1e-15 {
			t.Fatalf("rsLoRA scale %g, want lora_alpha/sqrt(r) = %g", got.Scale(), want)
		}
		mtEqualTensors(t, got.Tensors, a.Tensors)
	})
	for _, c := range []struct {
		name   string
		edit   func(c map[string]any)
		rename func(string) string
		want   string
	}{
		{"peft_type", func(c map[string]any) { c["peft_type"] = "IA3" }, nil, `peft_type "IA3" is not supported`},
		{"r", func(c map[string]any) { c["r"] = 0 }, nil, "r must be > 0"},
		{"r mismatch", func(c map[string]any) { c["r"] = 5 }, nil, "(r is 5 in adapter_config.json)"},
		{"lora_alpha", func(c map[string]any) { c["lora_alpha"] = -1 }, nil, "lora_alpha must be finite and > 0"},
		{"use_dora", func(c map[string]any) { c["use_dora"] = true }, nil, "use_dora true is not supported"},
		{"rank_pattern", func(c map[string]any) { c["rank_pattern"] = map[string]int{"c_fc": 2} }, nil, "rank_pattern is not supported"},
		{"alpha_pattern", func(c map[string]any) { c["alpha_pattern"] = map[string]int{"c_fc": 2} }, nil, "alpha_pattern is not supported"},
		{"modules_to_save", func(c map[string]any) { c["modules_to_save"] = []string{"lm_head"} }, nil, "modules_to_save [lm_head] is not supported"},
		{"bias", func(c map[string]any) { c["bias"] = "lora_only" }, nil, `bias "lora_only" is not supported`},
		{"foreign key", nil, func(k string) string { return strings.Replace(k, "attn.c_attn", "attn.q_proj", 1) }, "unexpected tensor base_model.model.transformer.h.0.attn.q_proj.lora_A.weight"},
		{"layer", nil, func(k string) string { return strings.Replace(k, "h.1.", "h.7.", 1) }, "layer 7 out of range"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadPEFT(write(t, c.edit, c.rename), cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
	t.Run("not a folder", func(t *testing.T) {
		_, err := LoadPEFT(t.TempDir(), cfg)
		if err == nil || !strings.Contains(err.Error(), "not a PEFT adapter folder (no adapter_config.json)") {
			t.Fatalf("error %v", err)
		}
	})
}
