package pipeline

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/optim"
)

// benchSizes are the configurations `make bench` compares with PyTorch (hack/torch_bench.py
// uses the same shapes: P pairs = 2P sequences of ctx tokens, half prompt, half response,
// LoRA rank 8 on the four projections, n_head = d/32).
var benchSizes = []struct{ d, L, T int }{{64, 2, 64}, {128, 2, 64}}

// BenchmarkMemberStep is one ensemble member's optimizer step as the train stage runs it:
// forward and backward of 8 pairs (16 sequences) through the gorgonia graph, then AdamW
// with gradient clipping on the adapter.
func BenchmarkMemberStep(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(fmt.Sprintf("d%d_L%d_T%d", sz.d, sz.L, sz.T), func(b *testing.B) {
			const P, V = 8, 257
			cfg := model.Config{ModelType: "gpt2", VocabSize: V, NPositions: sz.T, NEmbd: sz.d, NLayer: sz.L, NHead: sz.d / 32,
				LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 256, EOSTokenID: 256}
			base := model.Init(cfg, 1)
			a := model.NewAdapter(cfg, 8, 16, 2)
			rng := rand.New(rand.NewPCG(3, 4))
			prompts, chosen, rejected := make([][]int, P), make([][]int, P), make([][]int, P)
			for i := range P {
				for _, s := range []*[]int{&prompts[i], &chosen[i], &rejected[i]} {
					*s = make([]int, sz.T/2)
					for j := range *s {
						(*s)[j] = rng.IntN(256)
					}
				}
			}
			batch, err := model.PairBatch(prompts, chosen, rejected)
			if err != nil {
				b.Fatal(err)
			}
			run := &Run{Loss: "dpo", Beta: 0.1}
			tr, err := model.NewTrainer(base, 8, 2*P, sz.T, run.objective())
			if err != nil {
				b.Fatal(err)
			}
			ref, _, err := tr.LogProbs(nil, batch)
			if err != nil {
				b.Fatal(err)
			}
			opt, _ := optim.New(optim.DefaultConfig(5e-5, 1<<30))
			params, grads := map[string][]float64{}, map[string][]float64{}
			for n, t := range a.Tensors {
				params[n] = t.Data
			}
			b.ResetTimer()
			for b.Loop() {
				out, err := tr.Step(a, batch, ref)
				if err != nil {
					b.Fatal(err)
				}
				for n, g := range out.Grads {
					grads[n] = g.Data
				}
				opt.Step(params, grads)
			}
			tokens := float64(2 * P * sz.T)
			sec := b.Elapsed().Seconds() / float64(b.N)
			N := float64(12*sz.L*sz.d*sz.d + V*sz.d)
			flop := 6*N*tokens + 12*float64(sz.L*sz.T*sz.d)*tokens
			b.ReportMetric(tokens/sec, "tok/s")
			b.ReportMetric(flop/sec/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkGEMMPeak is the machine's float64 matrix-multiply rate with the BLAS the
// trainer uses (gonum, pure Go, one goroutine per call): the peak FLOP/s are quoted against.
func BenchmarkGEMMPeak(b *testing.B) {
	const n = 512
	mk := func() blas64.General {
		m := blas64.General{Rows: n, Cols: n, Stride: n, Data: make([]float64, n*n)}
		for i := range m.Data {
			m.Data[i] = float64(i%7) * 0.1
		}
		return m
	}
	x, y, z := mk(), mk(), mk()
	for b.Loop() {
		blas64.Gemm(blas.NoTrans, blas.NoTrans, 1, x, y, 0, z)
	}
	b.ReportMetric(2*n*n*n*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
