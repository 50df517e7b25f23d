package model

import "fmt"

// Precision is the floating-point type the engine computes in: activations, gradients, the frozen
// base weights as the kernels read them, and logits. Float32 is for real work (training, sampling,
// scoring, evaluation); Float64 is kept for gradient checks and golden tests. Parameters handed in
// and out (Weights, Adapter, gradients, optimizer state) stay float64 master copies at the API:
// converting them costs O(parameters) per step against O(parameters × tokens) of compute.
type Precision string

const (
	// Float32 is the default: GEMMs run in single precision at the BLAS's speed; sums that need it
	// (log-sum-exp, sequence log-prob sums, LayerNorm statistics, the loss) accumulate in float64.
	Float32 Precision = "float32"
	// Float64 computes everything in double precision (gradient checks, golden vectors).
	Float64 Precision = "float64"
)

// orDefault maps the zero value to Float32.
func (p Precision) orDefault() Precision {
	if p == "" {
		return Float32
	}
	return p
}

// Validate reports an unknown precision.
func (p Precision) Validate() error {
	switch p.orDefault() {
	case Float32, Float64:
		return nil
	}
	return fmt.Errorf("model: precision %q not supported (want float32 or float64)", string(p))
}

// ParsePrecision reads "float32", "fp32", "float64", "fp64" (empty means float32).
func ParsePrecision(s string) (Precision, error) {
	switch s {
	case "", "float32", "fp32", "f32":
		return Float32, nil
	case "float64", "fp64", "f64":
		return Float64, nil
	}
	return "", fmt.Errorf("precision %q: want float32 or float64", s)
}
