package kernels

import "math"

// GPT-2's "gelu_new": 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
const (
	geluC = 0.7978845608028654 // sqrt(2/pi)
	geluA = 0.044715
)

// Gelu writes y = gelu_new(x) elementwise (y may be x). With dydx not nil it also keeps the
// derivative gelu_new'(x) there, so that the backward is one multiply per element: the
// transcendental is evaluated once per element and step, in the forward.
func Gelu[F Float](y, dydx, x []F) {
	if x32, ok := any(x).([]float32); ok {
		y32, d32 := any(y).([]float32), any(dydx).([]float32)
		For(len(x), 1<<14, func(_, lo, hi int) {
			for i := lo; i < hi; i++ {
				v := float64(x32[i])
				u := geluC * (v + geluA*v*v*v)
				s, c := sigmoid2(u)
				y32[i] = float32(v * s)
				if d32 != nil {
					d32[i] = float32(s + 2*v*s*c*geluC*(1+3*geluA*v*v))
				}
			}
		})
		return
	}
	For(len(x), 1<<14, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			v := float64(x[i])
			t := math.Tanh(geluC * (v + geluA*v*v*v))
			y[i] = F(0.5 * v * (1 + t))
			if dydx != nil {
				dt := (1 - t*t) * geluC * (1 + 3*geluA*v*v)
				dydx[i] = F(0.5*(1+t) + 0.5*v*dt)
			}
		}
	})
}

// GeluBackward writes dx = dy·gelu_new'(x) from the derivative Gelu kept.
func GeluBackward[F Float](dx, dy, dydx []F) {
	For(len(dx), 1<<15, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			dx[i] = dy[i] * dydx[i]
		}
	})
}

// sigmoid2 returns s = σ(2u) and 1 − s, both to full relative accuracy: 0.5·(1 + tanh u) = σ(2u),
// so gelu_new(x) = x·σ(2u) and its derivative is σ(2u) + 2x·σ(2u)·(1 − σ(2u))·u'(x). This is the
// float32 path (float64 keeps libm's tanh): one exponential per element and no cancellation where
// tanh u is near ±1 (float32 1 + tanh u loses those digits; we keep them).
func sigmoid2(u float64) (s, c float64) {
	e := expNeg(-2 * math.Abs(u)) // in (0, 1]
	inv := 1 / (1 + e)
	if u >= 0 {
		return inv, e * inv
	}
	return e * inv, inv
}
