// Package kernels is the one set of GPT-2 layer kernels: a forward and a backward function per
// layer over plain row-major slices (llm.c's layout), generic over float32 and float64. The
// gorgonia training graph (package model's ops) and the KV-cache inference and scoring path both
// call these functions, so there is one LayerNorm, one GELU, one attention and one log-softmax.
//
// Conventions:
//   - activations are [rows, width] row-major; a "row" is one token position;
//   - matrix products go to trainer/blas (OpenBLAS when present, gonum otherwise);
//   - reductions that decide accuracy (LayerNorm statistics, softmax normalisers, log-sum-exps,
//     column sums) accumulate in float64 whatever F is, and always in row order, so results do not
//     depend on the thread count;
//   - in float32, exp runs on a polynomial (expNeg, error < 1e-8 relative, below float32's
//     rounding) because math.Exp per element would cost more than the GEMMs around it; float64
//     uses the math package, so gradient checks and golden tests see libm accuracy;
//   - a backward function overwrites its outputs unless its name or doc says it accumulates.
package kernels

import "unsafe"

// Float is the element type of the kernels.
type Float interface{ float32 | float64 }

// single reports whether F is float32 (a constant per instantiation).
func single[F Float]() bool {
	var z F
	return unsafe.Sizeof(z) == 4
}
