package kernels

import "math"

// expNeg returns e^x for x <= 0.34 (the range reduction assumes x·log2e - 0.5 <= 0) to
// about 1e-9 relative: Cody-Waite reduction x = n·ln2 + r, |r| <= ln2/2, and a degree-8 Taylor
// polynomial for e^r (truncation r^9/9! < 1.6e-10 at |r| = 0.347). Results below 1e-300 are 0;
// NaN stays NaN. It is several times faster than math.Exp, which matters in float32 mode where
// softmax, log-sum-exp and GELU call it once per element.
func expNeg(x float64) float64 {
	if !(x > -690) { // also NaN
		if x != x {
			return x
		}
		return 0
	}
	const (
		log2e = 1.4426950408889634
		ln2hi = 6.93147180369123816490e-01
		ln2lo = 1.90821492927058770002e-10
	)
	t := x*log2e - 0.5
	n := float64(int64(t)) // rounds x·log2e to nearest (t <= 0 truncates upwards)
	r := x - n*ln2hi - n*ln2lo
	// degree 8, Estrin's scheme: a shorter dependency chain than Horner's
	r2 := r * r
	r4 := r2 * r2
	p := (1 + r + r2*(1.0/2+r*(1.0/6))) + r4*((1.0/24+r*(1.0/120))+r2*(1.0/720+r*(1.0/5040))+r4*(1.0/40320))
	return p * math.Float64frombits(uint64(int64(n)+1023)<<52)
}

// expFunc is e^x at F's precision: the polynomial in float32, libm in float64. Kernels fetch it
// once per call.
func expFunc[F Float]() func(float64) float64 {
	if single[F]() {
		return expNeg
	}
	return math.Exp
}
