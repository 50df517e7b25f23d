package kernels

import (
	"math"

	"github.com/bpo-dev/bpo/trainer/blas"
)

// Attention is one head of causal self-attention: n queries at positions past..past+n-1 attend
// to the keys and values at positions 0..past+n-1, query i to the keys [lo_i, past+i] with
// lo_i = starts[i] (a packed document's first position; nil means 0). It writes
// o = softmax(q·kᵀ/√dh + mask)·v and keeps the probabilities in probs [n, past+n] (exactly 0 outside
// the visible range) for the backward. Rows of q, k and v are dh wide with strides ldq, ldk, ldk
// (k and v are views into a [*, 3d] qkv buffer in training, or a [*, d] KV cache in inference);
// o's rows have stride ldo. Training calls it with past = 0; the KV cache with past > 0.
func Attention[F Float](o []F, ldo int, q []F, ldq int, k, v []F, ldk int, n, past, dh int, probs []F, starts []int) {
	T := past + n
	scale := 1 / math.Sqrt(float64(dh))
	blas.Gemm(false, true, n, T, dh, F(scale), q, ldq, k, ldk, 0, probs, T)
	for i := 0; i < n; i++ {
		lo := 0
		if starts != nil {
			lo = starts[i]
		}
		softmaxRange[F](probs[i*T:(i+1)*T], lo, past+i+1)
	}
	blas.Gemm(false, false, n, dh, T, 1, probs, T, v, ldk, 0, o, ldo)
}

// softmaxRange replaces row[lo:hi] by its softmax (normaliser in float64) and zeroes the rest.
func softmaxRange[F Float](row []F, lo, hi int) {
	m := row[lo]
	for _, x := range row[lo+1 : hi] {
		m = max(m, x)
	}
	var z float64
	exp := expFunc[F]()
	for j := lo; j < hi; j++ {
		e := exp(float64(row[j] - m))
		row[j] = F(e)
		z += e
	}
	inv := 1 / z
	for j := lo; j < hi; j++ {
		row[j] = F(float64(row[j]) * inv)
	}
	clear(row[:lo])
	clear(row[hi:])
}

// AttentionBackward is Attention's backward for past = 0 and T = n queries: from the incoming
// gradient dout (stride ldo) and Attention's probabilities it writes dq, dk and dv (rows dh wide,
// stride ld, like q, k and v). dp is scratch of T·T elements.
func AttentionBackward[F Float](dq, dk, dv []F, ld int, q, k, v []F, dout []F, ldo int, probs, dp []F, T, dh int, starts []int) {
	scale := 1 / math.Sqrt(float64(dh))
	// dV = Pᵀ·dO ; dP = dO·Vᵀ
	blas.Gemm(true, false, T, dh, T, 1, probs, T, dout, ldo, 0, dv, ld)
	blas.Gemm(false, true, T, T, dh, 1, dout, ldo, v, ld, 0, dp, T)
	// dS = scale · P ∘ (dP − rowsum(P∘dP)) on the visible range, 0 elsewhere
	for i := 0; i < T; i++ {
		pr, dr := probs[i*T:(i+1)*T], dp[i*T:(i+1)*T]
		lo := 0
		if starts != nil {
			lo = starts[i]
		}
		var s float64
		for j := lo; j <= i; j++ {
			s += float64(pr[j]) * float64(dr[j])
		}
		for j := lo; j <= i; j++ {
			dr[j] = F(scale * float64(pr[j]) * (float64(dr[j]) - s))
		}
		clear(dr[:lo])
		clear(dr[i+1:])
	}
	// dQ = dS·K ; dK = dSᵀ·Q
	blas.Gemm(false, false, T, dh, T, 1, dp, T, k, ld, 0, dq, ld)
	blas.Gemm(true, false, T, dh, T, 1, dp, T, q, ld, 0, dk, ld)
}
