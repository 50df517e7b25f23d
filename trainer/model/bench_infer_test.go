package model

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Inference throughput at the sizes the project trains (byte-level vocabulary 257).
//
//	go test ./trainer/model -run '^$' -bench 'Sample|SequenceLogProbs' -benchtime 2s

var mtBenchSizes = []struct{ d, layers int }{{64, 2}, {128, 2}, {128, 4}}

const (
	mtBenchBatch  = 16
	mtBenchPrompt = 24
	mtBenchGen    = 64
)

func mtBenchModel(d, layers int) *Inference {
	cfg := mtConfig(257, 256, d, layers, 4)
	return NewInference(Init(cfg, 1))
}

// BenchmarkSampleStep measures KV-cache decoding: each op is one Step of a batch of 16
// rows; rows are re-prefilled (untimed) every 64 generated tokens, so positions range
// over 24..88 as when sampling short completions.
func BenchmarkSampleStep(b *testing.B) {
	for _, s := range mtBenchSizes {
		b.Run(fmt.Sprintf("d%d-L%d-B%d", s.d, s.layers, mtBenchBatch), func(b *testing.B) {
			m := mtBenchModel(s.d, s.layers)
			r := rand.New(rand.NewPCG(1, 2))
			c := m.NewKVCache(mtBenchBatch)
			rows := make([]int, mtBenchBatch)
			toks := make([]int, mtBenchBatch)
			prefill := func() {
				for i := range rows {
					rows[i] = i
					c.Prefill(i, mtTokens(r, mtBenchPrompt, 257))
				}
			}
			prefill()
			gen := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if gen == mtBenchGen {
					b.StopTimer()
					prefill()
					gen = 0
					b.StartTimer()
				}
				for j := range toks {
					toks[j] = r.IntN(257)
				}
				c.Step(rows, toks)
				gen++
			}
			b.ReportMetric(float64(b.N*mtBenchBatch)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

// BenchmarkSamplePrefill measures prompt prefill of a batch of 16 rows.
func BenchmarkSamplePrefill(b *testing.B) {
	for _, s := range mtBenchSizes {
		b.Run(fmt.Sprintf("d%d-L%d-B%d", s.d, s.layers, mtBenchBatch), func(b *testing.B) {
			m := mtBenchModel(s.d, s.layers)
			r := rand.New(rand.NewPCG(1, 2))
			c := m.NewKVCache(mtBenchBatch)
			prompt := mtTokens(r, mtBenchPrompt, 257)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for row := 0; row < mtBenchBatch; row++ {
					c.Prefill(row, prompt)
				}
			}
			b.ReportMetric(float64(b.N*mtBenchBatch*mtBenchPrompt)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

// BenchmarkSequenceLogProbs scores 64 (prompt 24, response 64) pairs per op; tok/s
// counts every token run through the model, resp_tok/s only the scored ones.
func BenchmarkSequenceLogProbs(b *testing.B) {
	for _, s := range mtBenchSizes {
		b.Run(fmt.Sprintf("d%d-L%d", s.d, s.layers), func(b *testing.B) {
			m := mtBenchModel(s.d, s.layers)
			r := rand.New(rand.NewPCG(3, 4))
			const n = 64
			prompts, responses := make([][]int, n), make([][]int, n)
			for i := range prompts {
				prompts[i] = mtTokens(r, mtBenchPrompt, 257)
				responses[i] = mtTokens(r, mtBenchGen, 257)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := m.SequenceLogProbs(prompts, responses); err != nil {
					b.Fatal(err)
				}
			}
			sec := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N*n*(mtBenchPrompt+mtBenchGen))/sec, "tok/s")
			b.ReportMetric(float64(b.N*n*mtBenchGen)/sec, "resp_tok/s")
		})
	}
}
