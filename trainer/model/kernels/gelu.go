package kernels

import "math"

// GPT-2's "gelu_new": 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
const (
	geluC = 0.7978845608028654 // sqrt(2/pi)
	geluA = 0.044715
)

// Gelu writes y = gelu_new(x) elementwise (y may be x).
func Gelu[F Float](y, x []F) {
	if x32, ok := any(x).([]float32); ok {
		y32 := any(y).([]float32)
		For(len(x), 1<<14, func(_, lo, hi int) {
			for i := lo; i < hi; i++ {
				v := float64(x32[i])
				s, _ := sigmoid2(geluC * (v + geluA*v*v*v))
				y32[i] = float32(v * s)
			}
		})
		return
	}
	For(len(x), 1<<14, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			v := float64(x[i])
			y[i] = F(0.5 * v * (1 + math.Tanh(geluC*(v+geluA*v*v*v))))
		}
	})
}

// GeluBackward writes dx = dy·gelu_new'(x), recomputing the tanh (cheaper than keeping it).
// float64 uses the tanh form with libm; float32 the equivalent sigmoid form (sigmoid2).
func GeluBackward[F Float](dx, x, dy []F) {
	if x32, ok := any(x).([]float32); ok {
		dx32, dy32 := any(dx).([]float32), any(dy).([]float32)
		For(len(x), 1<<14, func(_, lo, hi int) {
			for i := lo; i < hi; i++ {
				v := float64(x32[i])
				s, c := sigmoid2(geluC * (v + geluA*v*v*v))
				dx32[i] = float32(float64(dy32[i]) * (s + 2*v*s*c*geluC*(1+3*geluA*v*v)))
			}
		})
		return
	}
	For(len(x), 1<<14, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			v := float64(x[i])
			t := math.Tanh(geluC * (v + geluA*v*v*v))
			dt := (1 - t*t) * geluC * (1 + 3*geluA*v*v)
			dx[i] = F(float64(dy[i]) * (0.5*(1+t) + 0.5*v*dt))
		}
	})
}

// sigmoid2 returns s = σ(2u) and 1 − s, both to full relative accuracy: 0.5·(1 + tanh u) = σ(2u),
// so gelu_new(x) = x·σ(2u) and its derivative is σ(2u) + 2x·σ(2u)·(1 − σ(2u))·u'(x). This is the
// float32 path: one exponential per element and no cancellation where tanh u is near ±1 (PyTorch's
// float32 1 + tanh u loses those digits; we keep them). The exponential is expNeg's, written out
// here so that the compiler keeps the whole loop body free of calls.
func sigmoid2(u float64) (s, c float64) {
	x := -2 * math.Abs(u) // e = exp(x) in (0, 1]
	var e float64
	if x > -690 {
		t := x*1.4426950408889634 - 0.5
		n := float64(int64(t))
		r := x - n*6.93147180369123816490e-01 - n*1.90821492927058770002e-10
		p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040+r*(1.0/40320))))))))
		e = p * math.Float64frombits(uint64(int64(n)+1023)<<52)
	}
	inv := 1 / (1 + e)
	if u >= 0 {
		return inv, e * inv
	}
	return e * inv, inv
}
