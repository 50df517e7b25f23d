package model

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
)

// gpt2InitStd is GPT-2's initializer_range.
const gpt2InitStd = 0.02

// wioInitRand returns the random stream of one named tensor for a seed: each tensor has
// its own PCG stream keyed by (seed, FNV-1a of name), so that a tensor's values do not
// depend on the other tensors (e.g. wte does not change with n_layer).
func wioInitRand(seed int64, name string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(name))
	return rand.New(rand.NewPCG(uint64(seed), h.Sum64()))
}

// Init returns freshly initialised GPT-2 weights, deterministic for (cfg, seed), as
// Hugging Face GPT2PreTrainedModel._init_weights does: embeddings and Conv1D weights
// ~ N(0, 0.02²), the residual projections attn.c_proj.weight and mlp.c_proj.weight ~
// N(0, (0.02/sqrt(2·n_layer))²), biases 0, LayerNorm gain 1 and bias 0.
// It panics if cfg is invalid.
func Init(cfg Config, seed int64) *Weights {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("model.Init: %v", err))
	}
	residStd := gpt2InitStd / math.Sqrt(2*float64(cfg.NLayer))
	w := &Weights{Config: cfg, Tensors: map[string]*Tensor{}}
	for name, shape := range cfg.ParamShapes() {
		t := NewTensor(shape...)
		switch {
		case strings.Contains(name, "ln_") && strings.HasSuffix(name, ".weight"):
			for i := range t.Data {
				t.Data[i] = 1
			}
		case strings.HasSuffix(name, ".bias"):
			// zero
		default:
			std := gpt2InitStd
			if strings.HasSuffix(name, "c_proj.weight") {
				std = residStd
			}
			r := wioInitRand(seed, name)
			for i := range t.Data {
				t.Data[i] = std * r.NormFloat64()
			}
		}
		w.Tensors[name] = t
	}
	return w
}

// NewAdapter returns a LoRA adapter on every layer and every target in LoRATargets,
// deterministic for (cfg, rank, seed): A [in, r] ~ N(0, 1/in) (Kaiming-like, so that
// x·A has unit-scale entries for unit-scale x), B [r, out] = 0, so the adapter starts
// as the identity delta. It panics if cfg is invalid, rank <= 0 or alpha <= 0.
func NewAdapter(cfg Config, rank int, alpha float64, seed int64) *Adapter {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("model.NewAdapter: %v", err))
	}
	if rank <= 0 || !(alpha > 0) || math.IsInf(alpha, 0) {
		panic(fmt.Sprintf("model.NewAdapter: need rank > 0 and finite alpha > 0, got rank %d alpha %g", rank, alpha))
	}
	a := &Adapter{Rank: rank, Alpha: alpha, Tensors: map[string]*Tensor{}}
	for name, shape := range cfg.AdapterShapes(rank) {
		t := NewTensor(shape...)
		if strings.HasSuffix(name, ".lora_A") {
			std := 1 / math.Sqrt(float64(shape[0]))
			r := wioInitRand(seed, name)
			for i := range t.Data {
				t.Data[i] = std * r.NormFloat64()
			}
		}
		a.Tensors[name] = t
	}
	return a
}
