package kernels

import (
	"math/rand/v2"
	"testing"

	"github.com/bpo-dev/bpo/trainer/blas"
)

// Per-element costs of the elementwise kernels, one thread (the GEMMs are benchmarked in
// trainer/blas). ns/op is per call on 1<<20 elements.
func BenchmarkElementwise(b *testing.B) {
	blas.SetThreads(1)
	defer blas.SetThreads(0)
	const n = 1 << 20
	rng := rand.New(rand.NewPCG(1, 1))
	x, y, dy, g := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range x {
		x[i], dy[i] = float32(rng.NormFloat64()*3), float32(rng.NormFloat64())
	}
	b.Run("gelu", func(b *testing.B) {
		for b.Loop() {
			Gelu(y, g, x)
		}
	})
	b.Run("gelu-backward", func(b *testing.B) {
		for b.Loop() {
			GeluBackward(y, dy, g)
		}
	})
	b.Run("logsumexp", func(b *testing.B) {
		for b.Loop() {
			LogSumExp(x)
		}
	})
}
