package blas

// goSgemm is a simple hand-written Go loop, kept only as the baseline of BenchmarkSgemmShapes:
// it was never the fastest kernel for any measured shape (see routing in blas.go), so Gemm
// does not use it. C = beta·C, then alpha times each dot product, summed in k order.
func goSgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	scaleC(m, n, beta, c, ldc)
	switch {
	case !tB:
		// c[i,:] += (alpha·a[i,l])·b[l,:], l ascending: the inner loop runs along rows of B and C.
		for i := range m {
			crow := c[i*ldc : i*ldc+n]
			for l := range k {
				var av float32
				if tA {
					av = a[l*lda+i]
				} else {
					av = a[i*lda+l]
				}
				t := alpha * av
				brow := b[l*ldb : l*ldb+n]
				brow = brow[:len(crow)]
				for j := range crow {
					crow[j] += t * brow[j]
				}
			}
		}
	case !tA:
		// B is n×k: c[i,j] += alpha·(a[i,:]·b[j,:]), the dot product along contiguous rows.
		for i := range m {
			arow := a[i*lda : i*lda+k]
			crow := c[i*ldc : i*ldc+n]
			for j := range crow {
				brow := b[j*ldb : j*ldb+k]
				brow = brow[:len(arow)]
				var s float32
				for l := range arow {
					s += arow[l] * brow[l]
				}
				crow[j] += alpha * s
			}
		}
	default:
		// A is k×m and B is n×k.
		for i := range m {
			crow := c[i*ldc : i*ldc+n]
			for j := range crow {
				brow := b[j*ldb : j*ldb+k]
				var s float32
				for l, bv := range brow {
					s += a[l*lda+i] * bv
				}
				crow[j] += alpha * s
			}
		}
	}
}
