package blas

import (
	"math/rand/v2"
	"time"
)

// Peak measures the SGEMM rate of the current backend and thread count: C = A·B on 1024×1024
// float32 matrices, repeated for about seconds (at least twice, the first call a warm-up), and
// returns the best call's rate in GFLOP/s. `bpo bench` divides the trainer's rate by it.
func Peak(seconds float64) (gflops float64) {
	const n = 1024
	rng := rand.New(rand.NewPCG(1, 2))
	a, b, c := make([]float32, n*n), make([]float32, n*n), make([]float32, n*n)
	for i := range a {
		a[i], b[i] = rng.Float32()-0.5, rng.Float32()-0.5
	}
	budget := time.Duration(seconds * float64(time.Second))
	start := time.Now()
	best := time.Duration(1<<63 - 1)
	for i := 0; i < 2 || time.Since(start) < budget; i++ {
		t := time.Now()
		Gemm(false, false, n, n, n, 1, a, n, b, n, 0, c, n)
		if d := time.Since(t); i > 0 && d < best {
			best = d
		}
	}
	return 2 * n * n * n / best.Seconds() / 1e9
}
