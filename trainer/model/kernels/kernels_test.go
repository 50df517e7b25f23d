package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// expNeg against math.Exp over the range softmax and tanh use it on: relative error below 1e-8
// (float32's half-ulp is 6e-8), exact 0 far below, NaN kept.
func TestExpNeg(t *testing.T) {
	worst := 0.0
	for i := 0; i <= 200000; i++ {
		x := -88 * float64(i) / 200000
		got, want := expNeg(x), math.Exp(x)
		worst = max(worst, math.Abs(got-want)/want)
	}
	if worst > 1e-8 {
		t.Errorf("expNeg: worst relative error %.3g on [-88, 0]", worst)
	}
	if expNeg(-1000) != 0 || expNeg(math.Inf(-1)) != 0 || !math.IsNaN(expNeg(math.NaN())) || expNeg(0) != 1 {
		t.Errorf("expNeg edge cases: %v %v %v %v", expNeg(-1000), expNeg(math.Inf(-1)), expNeg(math.NaN()), expNeg(0))
	}
}

// gelu_new and its derivative in float32 (sigmoid form, polynomial exp) against float64 (tanh
// form, libm), on the same float32 inputs; then the derivative against a central difference.
func TestGeluFloat32MatchesFloat64(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 4096
	x64, dy64 := make([]float64, n), make([]float64, n)
	x32, dy32 := make([]float32, n), make([]float32, n)
	for i := range x64 {
		x64[i] = rng.NormFloat64() * 4
		dy64[i] = rng.NormFloat64()
		x32[i], dy32[i] = float32(x64[i]), float32(dy64[i])
		x64[i], dy64[i] = float64(x32[i]), float64(dy32[i]) // the same inputs on both sides
	}
	y64, y32 := make([]float64, n), make([]float32, n)
	g64, g32 := make([]float64, n), make([]float32, n)
	Gelu(y64, g64, x64)
	Gelu(y32, g32, x32)
	d64, d32 := make([]float64, n), make([]float32, n)
	GeluBackward(d64, dy64, g64)
	GeluBackward(d32, dy32, g32)
	for i := range x64 {
		if e := math.Abs(float64(y32[i]) - y64[i]); e > 2e-7*math.Max(1, math.Abs(y64[i])) {
			t.Fatalf("gelu(%g): float32 %g, float64 %g", x64[i], y32[i], y64[i])
		}
		if e := math.Abs(float64(d32[i]) - d64[i]); e > 3e-7*math.Max(1, math.Abs(d64[i])) {
			t.Fatalf("gelu'(%g)·%g: float32 %g, float64 %g", x64[i], dy64[i], d32[i], d64[i])
		}
	}
}

// Attention over a KV cache (past > 0) gives the last rows of the full causal block.
func TestAttentionWithPastMatchesBlock(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const T, dh, past = 9, 4, 6
	q, k, v := make([]float64, T*dh), make([]float64, T*dh), make([]float64, T*dh)
	for _, s := range [][]float64{q, k, v} {
		for i := range s {
			s[i] = rng.NormFloat64()
		}
	}
	full := make([]float64, T*dh)
	Attention(full, dh, q, dh, k, v, dh, T, 0, dh, make([]float64, T*T), nil)
	n := T - past
	tail := make([]float64, n*dh)
	Attention(tail, dh, q[past*dh:], dh, k, v, dh, n, past, dh, make([]float64, n*T), nil)
	for i := range tail {
		if math.Abs(tail[i]-full[past*dh+i]) > 1e-14 {
			t.Fatalf("row %d col %d: with past %g, block %g", past+i/dh, i%dh, tail[i], full[past*dh+i])
		}
	}
	// The first row attends only to itself: its output is its own value row.
	for j := 0; j < dh; j++ {
		if math.Abs(full[j]-v[j]) > 1e-15 {
			t.Fatalf("row 0 output %v, want v[0] %v", full[:dh], v[:dh])
		}
	}
}

func TestLogSoftmax(t *testing.T) {
	row := []float32{1, 2, 3, -1000}
	lse := LogSumExp(row)
	want := math.Log(math.Exp(1) + math.Exp(2) + math.Exp(3))
	if math.Abs(lse-want) > 1e-7 {
		t.Errorf("LogSumExp = %.9g, want %.9g", lse, want)
	}
	d := make([]float32, 4)
	LogSoftmaxBackward(d, row, lse, 2, 2)
	var sum float64
	for _, v := range d {
		sum += float64(v)
	}
	if math.Abs(sum) > 1e-6 || d[3] != 0 || d[2] >= 0 {
		t.Errorf("LogSoftmaxBackward = %v: want a zero-sum gradient, 0 on the -1000 logit, negative on the target", d)
	}
}

func TestGeluDerivative(t *testing.T) {
	const h = 1e-5
	for _, v := range []float64{-9, -3.2, -1, -0.3, 0, 0.2, 1, 2.5, 7} {
		y, g, yp, ym := make([]float64, 1), make([]float64, 1), make([]float64, 1), make([]float64, 1)
		Gelu(y, g, []float64{v})
		Gelu(yp, nil, []float64{v + h})
		Gelu(ym, nil, []float64{v - h})
		if fd := (yp[0] - ym[0]) / (2 * h); math.Abs(fd-g[0]) > 1e-8 {
			t.Errorf("gelu'(%g) = %.12g, central difference %.12g", v, g[0], fd)
		}
	}
}
