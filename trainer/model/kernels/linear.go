package kernels

import "github.com/bpo-dev/bpo/trainer/blas"

// ldW is the row stride of W in Linear: [in,out] has out columns, [out,in] (transW) has in.
func ldW(in, out int, transW bool) int {
	if transW {
		return in
	}
	return out
}

// Linear writes y = x·op(W) + b for x [n,in]: op(W) is W [in,out] (GPT-2's Conv1D), or Wᵀ for
// W [out,in] when transW (the output projection tied to wte). A nil b adds no bias; with
// accumulate the result is added to y (the residual stream).
func Linear[F Float](y, x, w, b []F, n, in, out int, transW, accumulate bool) {
	beta := F(0)
	if accumulate {
		beta = 1
	}
	if b != nil {
		for i := 0; i < n; i++ {
			yr := y[i*out : (i+1)*out]
			if accumulate {
				for j, v := range b {
					yr[j] += v
				}
			} else {
				copy(yr, b)
			}
		}
		beta = 1
	}
	blas.Gemm(false, transW, n, out, in, 1, x, in, w, ldW(in, out, transW), beta, y, out)
}

// LinearBackwardX writes dx = dy·op(W)ᵀ [n,in] (adds to dx with accumulate).
func LinearBackwardX[F Float](dx, dy, w []F, n, in, out int, transW, accumulate bool) {
	beta := F(0)
	if accumulate {
		beta = 1
	}
	blas.Gemm(false, !transW, n, in, out, 1, dy, out, w, ldW(in, out, transW), beta, dx, in)
}

// LinearBackwardW writes dW = xᵀ·dy [in,out], or dyᵀ·x [out,in] when transW.
func LinearBackwardW[F Float](dw, x, dy []F, n, in, out int, transW bool) {
	if transW {
		blas.Gemm(true, false, out, in, n, 1, dy, out, x, in, 0, dw, in)
		return
	}
	blas.Gemm(true, false, in, out, n, 1, x, in, dy, out, 0, dw, out)
}

// BiasBackward writes db = Σ_rows dy (the gradient of a bias added to every row), summed in row
// order in float64.
func BiasBackward[F Float](db, dy []F) {
	k := len(db)
	s := make([]float64, k)
	for r := 0; r < len(dy)/k; r++ {
		for j, g := range dy[r*k : (r+1)*k] {
			s[j] += float64(g)
		}
	}
	for j, v := range s {
		db[j] = F(v)
	}
}

// LoRA adds the low-rank path y += s·(x·A)·B for x [n,in], A [in,r], B [r,out] and keeps
// xa = x·A [n,r] for the backward. The frozen part x·W + b is Linear.
func LoRA[F Float](y, x, a, b, xa []F, n, in, out, r int, s F) {
	blas.Gemm(false, false, n, r, in, 1, x, in, a, r, 0, xa, r)
	blas.Gemm(false, false, n, out, r, s, xa, r, b, out, 1, y, out)
}

// The LoRA backward, in the four products gorgonia schedules as separate nodes:
// u = s·dy·Bᵀ [n,r] (shared), dx += u·Aᵀ, dA = xᵀ·u, dB = s·xaᵀ·dy.

// LoRABackwardU writes u = s·dy·Bᵀ.
func LoRABackwardU[F Float](u, dy, b []F, n, out, r int, s F) {
	blas.Gemm(false, true, n, r, out, s, dy, out, b, out, 0, u, r)
}

// LoRABackwardX adds u·Aᵀ to dx [n,in].
func LoRABackwardX[F Float](dx, u, a []F, n, in, r int) {
	blas.Gemm(false, true, n, in, r, 1, u, r, a, r, 1, dx, in)
}

// LoRABackwardA writes dA = xᵀ·u [in,r].
func LoRABackwardA[F Float](da, x, u []F, n, in, r int) {
	blas.Gemm(true, false, in, r, n, 1, x, in, u, r, 0, da, r)
}

// LoRABackwardB writes dB = s·xaᵀ·dy [r,out].
func LoRABackwardB[F Float](db, xa, dy []F, n, out, r int, s F) {
	blas.Gemm(true, false, r, out, n, s, xa, r, dy, out, 0, db, out)
}
