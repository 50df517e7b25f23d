package blas

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchGemm times op on float32 inputs of the shape and reports GFLOP/s.
func benchGemm(b *testing.B, s shape, op func(a, bm, c []float32)) {
	rng := rand.New(rand.NewPCG(7, 8))
	a, bm, c := randSlice[float32](rng, s.m*s.k), randSlice[float32](rng, s.k*s.n), make([]float32, s.m*s.n)
	op(a, bm, c) // warm-up (and the first call loads the backend)
	b.ResetTimer()
	for b.Loop() {
		op(a, bm, c)
	}
	b.ReportMetric(2*float64(s.m)*float64(s.n)*float64(s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkSgemm: square C = A·B through Gemm under each backend, with 1 thread and with the
// default Threads().
func BenchmarkSgemm(b *testing.B) {
	for _, backend := range []string{"openblas", "gonum"} {
		b.Run(backend, func(b *testing.B) {
			restore, ok := useEngine(backend)
			if !ok {
				b.Skipf("%s not available", backend)
			}
			defer restore()
			for _, n := range []int{512, 1024, 2048} {
				for _, threads := range []int{1, Threads()} {
					b.Run(fmt.Sprintf("n=%d/threads=%d", n, threads), func(b *testing.B) {
						withThreads(b, threads)
						benchGemm(b, shape{n, n, n}, func(a, bm, c []float32) {
							Gemm(false, false, n, n, n, 1, a, n, bm, n, 0, c, n)
						})
					})
				}
			}
		})
	}
}

// smallShapes are the trainer's small GEMMs: attention per head (T×T×dh, T×dh×T with dh=32),
// LoRA rank 8 (n×8×d, 8×d×n) and one-token decoding (1×d×k).
var smallShapes = []shape{{128, 128, 32}, {128, 32, 128}, {256, 256, 32}, {2048, 8, 256}, {8, 256, 2048}, {1, 4096, 256}, {1, 256, 32}, {1, 32, 256}, {1, 768, 256}}

// BenchmarkSgemmShapes: the small shapes through each single-threaded kernel (openblas, gonum,
// the Go loop; one call, no split) and through Gemm (routed by smallGo, split by Threads()).
func BenchmarkSgemmShapes(b *testing.B) {
	kernels := []struct {
		name string
		kern gemmFunc[float32]
	}{{"gonum", gonumSgemm}, {"goloop", goSgemm}}
	if e, err := openBLAS(); err == nil {
		kernels = append([]struct {
			name string
			kern gemmFunc[float32]
		}{{"openblas", e.sgemm}}, kernels...)
	}
	for _, s := range smallShapes {
		for _, kn := range kernels {
			b.Run(fmt.Sprintf("%dx%dx%d/%s", s.m, s.n, s.k, kn.name), func(b *testing.B) {
				benchGemm(b, s, func(a, bm, c []float32) {
					kn.kern(false, false, s.m, s.n, s.k, 1, a, s.k, bm, s.n, 0, c, s.n)
				})
			})
		}
		b.Run(fmt.Sprintf("%dx%dx%d/Gemm-%s", s.m, s.n, s.k, Backend().Name), func(b *testing.B) {
			benchGemm(b, s, func(a, bm, c []float32) {
				Gemm(false, false, s.m, s.n, s.k, 1, a, s.k, bm, s.n, 0, c, s.n)
			})
		})
	}
}
