package model

import (
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
