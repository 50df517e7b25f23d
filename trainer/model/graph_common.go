package model

import (
	"fmt"
	"runtime"

	G "gorgonia.org/gorgonia"
)

// grNewVM wraps G.NewTapeMachine. gorgonia sets a finalizer on every tape machine (to release
// CUDA state), and the machine sits in a reference cycle with its program; Go never collects a
// cycle that holds a finalizer, so every trainer a process built stayed in memory for good
// (about 126 MB each at d96/L2, batch 32 x 60 tokens: an experiment grid reached 24 GB and was
// OOM-killed). We never use CUDA, so the finalizer is dropped and the machine is collected
// like any other object once the trainer is unreachable.
func grNewVM(g *G.ExprGraph, opts ...G.VMOpt) G.VM {
	vm := G.NewTapeMachine(g, opts...)
	runtime.SetFinalizer(vm, nil)
	return vm
}

// grDecoderStack builds the pre-LayerNorm blocks and the final LayerNorm on the embeddings x.
// The preference trainer and the language-model trainer share it and differ only in how a
// LayerNorm, a Conv1D projection and causal attention are built (frozen base + LoRA, or full
// parameters; plain or packed-document attention).
func grDecoderStack(x *G.Node, cfg Config,
	ln func(x *G.Node, prefix string) (*G.Node, error),
	linear func(x *G.Node, prefix string, in, out int) (*G.Node, error),
	attention func(qkv *G.Node) (*G.Node, error),
) (*G.Node, error) {
	d := cfg.NEmbd
	for l := 0; l < cfg.NLayer; l++ {
		p := fmt.Sprintf("h.%d.", l)
		a, err := ln(x, p+"ln_1")
		if err != nil {
			return nil, err
		}
		if a, err = linear(a, p+"attn.c_attn", d, 3*d); err != nil {
			return nil, err
		}
		if a, err = attention(a); err != nil {
			return nil, err
		}
		if a, err = linear(a, p+"attn.c_proj", d, d); err != nil {
			return nil, err
		}
		if x, err = G.Add(x, a); err != nil {
			return nil, err
		}
		m, err := ln(x, p+"ln_2")
		if err != nil {
			return nil, err
		}
		if m, err = linear(m, p+"mlp.c_fc", d, 4*d); err != nil {
			return nil, err
		}
		if m, err = grGeluOp(m); err != nil {
			return nil, err
		}
		if m, err = linear(m, p+"mlp.c_proj", 4*d, d); err != nil {
			return nil, err
		}
		if x, err = G.Add(x, m); err != nil {
			return nil, err
		}
	}
	return ln(x, "ln_f")
}
