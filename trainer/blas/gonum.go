package blas

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// The pure-Go backend: gonum's Implementation (v0.17.0), used without cgo, when OpenBLAS cannot be
// loaded, or with BPO_BLAS=gonum.
//
// gonum's Sgemm/Dgemm parallelise by themselves once C has 4 or more 64×64 tiles (sgemmParallel:
// runtime.GOMAXPROCS(0) workers over the tiles, each tile summing A·B in k-chunks of 64 in order).
// Calling it on our row blocks would stack that on top of our own split and ignore Threads(), so a
// block is instead walked here exactly the way sgemmParallel walks C, 64×64 tiles and 64-wide
// k-chunks, each chunk one call of the Implementation on a piece small enough to stay serial
// inside. Every element of C is summed in the same order as in gonum's parallel path (k ascending,
// chunk by chunk, chunks at multiples of 64 from 0) whatever the row split and thread count.

const gonumTile = 64 // gonum's blockSize

// gonumMinBlockWork is the least m·n·k per row block for the gonum backend: at ~3-8 GFLOP/s a
// block of 1<<20 multiply-adds takes ~0.3-0.7 ms, far above the goroutine and semaphore costs
// (~1-2 µs). gonum is split-invariant by construction (above), so this threshold is only about
// speed.
const gonumMinBlockWork = 1 << 20

var gonumImpl gonum.Implementation

func trans(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}

func gonumSgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	gonumTiled(gonumImpl.Sgemm, tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func gonumDgemm(tA, tB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	gonumTiled(gonumImpl.Dgemm, tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// gonumTiled scales C by beta, then adds alpha·op(A)·op(B) tile by tile and k-chunk by k-chunk,
// each piece one serial call of gonum's gemm with beta 1.
func gonumTiled[F float32 | float64](gemm func(tA, tB blas.Transpose, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int),
	tA, tB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) {
	scaleC(m, n, beta, c, ldc)
	ta, tb := trans(tA), trans(tB)
	for i := 0; i < m; i += gonumTile {
		mi := min(gonumTile, m-i)
		for j := 0; j < n; j += gonumTile {
			nj := min(gonumTile, n-j)
			cs := c[i*ldc+j:]
			for l := 0; l < k; l += gonumTile {
				kl := min(gonumTile, k-l)
				var as, bs []F
				if tA {
					as = a[l*lda+i:]
				} else {
					as = a[i*lda+l:]
				}
				if tB {
					bs = b[j*ldb+l:]
				} else {
					bs = b[l*ldb+j:]
				}
				gemm(ta, tb, mi, nj, kl, alpha, as, lda, bs, ldb, 1, cs, ldc)
			}
		}
	}
}
