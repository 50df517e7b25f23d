package model

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// BenchmarkTrainStep times one forward+backward of the training graph (DPO, LoRA rank 8 on all
// four projections, batch 16 sequences, byte-level vocabulary 257). The optimizer update is not
// included. Metrics:
//   - tok/s: B*T tokens per forward+backward;
//   - GFLOP/s: nominal model FLOPs, 6*N*tokens + 12*L*T*d*tokens (attention), N = 12*L*d² + V*d
//     (the V*d term is the tied output projection). With frozen base weights the backward skips
//     dW, so the executed work is closer to 4*N*tokens: the nominal figure is the usual convention.
//   - cpu-ms/op and tok/cpu-s: process CPU time (user+system) per step, which stays meaningful when
//     the machine is shared (wall-clock figures then depend on the other load).
func BenchmarkTrainStep(b *testing.B) {
	for _, sz := range []struct{ d, L, T int }{{64, 2, 64}, {128, 2, 64}, {128, 4, 128}} {
		b.Run(fmt.Sprintf("d%d_L%d_T%d_B16", sz.d, sz.L, sz.T), func(b *testing.B) {
			const B, r, V = 16, 8, 257
			cfg := Config{ModelType: "gpt2", VocabSize: V, NPositions: 256, NEmbd: sz.d, NLayer: sz.L, NHead: sz.d / 32,
				LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 256, EOSTokenID: 256}
			rng := rand.New(rand.NewPCG(99, 1))
			base := grRandomWeights(rng, cfg)
			ad := grRandomAdapter(rng, cfg, r, 16, 0.05)
			batch := Batch{Tokens: make([][]int, B), Mask: make([][]bool, B)}
			for i := range B {
				batch.Tokens[i] = make([]int, sz.T)
				batch.Mask[i] = make([]bool, sz.T)
				for t := range sz.T {
					batch.Tokens[i][t] = rng.IntN(V)
					batch.Mask[i][t] = t >= sz.T/4 // a quarter prompt, the rest response
				}
			}
			tr, err := NewTrainer(base, r, B, sz.T, Objective{Loss: grTestLoss("DPO", 0.1)})
			if err != nil {
				b.Fatal(err)
			}
			ref, _, err := tr.LogProbs(nil, batch)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tr.Step(ad, batch, ref); err != nil { // warm the buffers
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := grCPUTime()
			for b.Loop() {
				if _, err := tr.Step(ad, batch, ref); err != nil {
					b.Fatal(err)
				}
			}
			cpu := (grCPUTime() - cpu0).Seconds() / float64(b.N)
			sec := b.Elapsed().Seconds() / float64(b.N)
			tokens := float64(B * sz.T)
			N := float64(12*sz.L*sz.d*sz.d + V*sz.d)
			flop := 6*N*tokens + 12*float64(sz.L*sz.T*sz.d)*tokens
			b.ReportMetric(tokens/sec, "tok/s")
			b.ReportMetric(flop/sec/1e9, "GFLOP/s")
			b.ReportMetric(cpu*1e3, "cpu-ms/op")
			b.ReportMetric(tokens/cpu, "tok/cpu-s")
			b.ReportMetric(flop/cpu/1e9, "GFLOP/cpu-s")
		})
	}
}

// BenchmarkLogProbs times the forward-only scoring path (d128/L4/T128, batch 16).
func BenchmarkLogProbs(b *testing.B) {
	const B, T, r, V = 16, 128, 8, 257
	cfg := Config{ModelType: "gpt2", VocabSize: V, NPositions: 256, NEmbd: 128, NLayer: 4, NHead: 4,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 256, EOSTokenID: 256}
	rng := rand.New(rand.NewPCG(98, 1))
	base := grRandomWeights(rng, cfg)
	ad := grRandomAdapter(rng, cfg, r, 16, 0.05)
	batch := grRandomBatch(rng, cfg, B, T)
	tr, err := NewTrainer(base, r, B, T, Objective{})
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := tr.LogProbs(ad, batch); err != nil { // warm the buffers
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := tr.LogProbs(ad, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(B*T)*float64(b.N)/b.Elapsed().Seconds(), "tok/s")
}

// BenchmarkEmbedding compares three ways to look up N = 16*128 tokens in a [257,128] table
// (forward only; the embedding tables are frozen in LoRA training): a one-hot [N,V]·[V,d] matmul,
// gorgonia's ByIndices, and the graph's Embed op (which also adds the position embedding).
func BenchmarkEmbedding(b *testing.B) {
	const N, T, V, d = 16 * 128, 128, 257, 128
	rng := rand.New(rand.NewPCG(97, 1))
	wteT := grRandTensor(rng, 1, V, d)
	wpeT := grRandTensor(rng, 1, T, d)
	ids := make([]int, N)
	idsF := make([]float64, N)
	onehot := make([]float64, N*V)
	for i := range ids {
		ids[i] = rng.IntN(V)
		idsF[i] = float64(ids[i])
		onehot[i*V+ids[i]] = 1
	}
	run := func(b *testing.B, build func(g *G.ExprGraph, wte *G.Node) *G.Node) {
		g := G.NewGraph()
		wte := G.NewMatrix(g, tensor.Float64, G.WithShape(V, d), G.WithName("wte"), G.WithValue(grDenseOf(wteT)))
		out := build(g, wte)
		vm := G.NewTapeMachine(g)
		defer vm.Close()
		b.ReportAllocs()
		for b.Loop() {
			if err := vm.RunAll(); err != nil {
				b.Fatal(err)
			}
			vm.Reset()
		}
		_ = out
	}
	b.Run("onehot-matmul", func(b *testing.B) {
		run(b, func(g *G.ExprGraph, wte *G.Node) *G.Node {
			oh := G.NewMatrix(g, tensor.Float64, G.WithShape(N, V), G.WithName("onehot"),
				G.WithValue(tensor.New(tensor.WithShape(N, V), tensor.WithBacking(onehot))))
			return G.Must(G.Mul(oh, wte))
		})
	})
	b.Run("ByIndices", func(b *testing.B) {
		run(b, func(g *G.ExprGraph, wte *G.Node) *G.Node {
			idx := G.NewVector(g, tensor.Int, G.WithShape(N), G.WithName("idx"),
				G.WithValue(tensor.New(tensor.WithShape(N), tensor.WithBacking(ids))))
			return G.Must(G.ByIndices(wte, idx, 0))
		})
	})
	b.Run("EmbedOp", func(b *testing.B) {
		run(b, func(g *G.ExprGraph, wte *G.Node) *G.Node {
			wpe := G.NewMatrix(g, tensor.Float64, G.WithShape(T, d), G.WithName("wpe"), G.WithValue(grDenseOf(wpeT)))
			tok := G.NewVector(g, tensor.Float64, G.WithShape(N), G.WithName("tok"),
				G.WithValue(tensor.New(tensor.WithShape(N), tensor.WithBacking(idsF))))
			return G.Must(grEmbedAtOp[float64](wte, wpe, tok, nil, T))
		})
	})
}

// grCPUTime is this process's CPU time so far (user + system).
func grCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
