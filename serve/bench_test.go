package serve

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// BenchmarkConcurrentCompletions: 16 clients, 32 tokens each, on small-reviews, with the batch
// of 16 rows and with one row (no batching): generated tokens per second.
//
//	go test ./serve -run '^$' -bench ConcurrentCompletions -benchtime 3x
func BenchmarkConcurrentCompletions(b *testing.B) {
	for _, c := range []struct {
		name     string
		maxBatch int
	}{{"batch16", 16}, {"batch1", 1}} {
		b.Run(c.name, func(b *testing.B) {
			s, err := New(Options{ModelDir: "../trainer/task/models/small-reviews", MaxBatch: c.maxBatch})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Load(); err != nil {
				b.Fatal(err)
			}
			hs := httptest.NewServer(s.Handler())
			defer hs.Close()
			client := openai.NewClient(option.WithBaseURL(hs.URL+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
			const clients, tokens = 16, 32
			b.ResetTimer()
			generated := 0
			for i := 0; i < b.N; i++ {
				var wg sync.WaitGroup
				var mu sync.Mutex
				for k := 0; k < clients; k++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						res, err := client.Completions.New(context.Background(), openai.CompletionNewParams{
							Model: "small-reviews", Prompt: strPrompt("The food was"), MaxTokens: openai.Int(tokens), Seed: openai.Int(int64(k)),
						})
						if err != nil {
							b.Error(err)
							return
						}
						mu.Lock()
						generated += int(res.Usage.CompletionTokens)
						mu.Unlock()
					}()
				}
				wg.Wait()
			}
			b.ReportMetric(float64(generated)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
