package main

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/trainer/blas"
)

func TestBenchPrintsOneJSONObjectPerMeasurement(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { // --threads is process-wide
		runtime.GOMAXPROCS(procs)
		blas.SetThreads(0)
	})
	for _, what := range []string{"train", "sample", "peak"} {
		var out bytes.Buffer
		c := benchCmd()
		c.SetArgs([]string{"--what", what, "--width", "32", "--layers", "1", "--context", "16", "--vocab", "64",
			"--seconds", "0.05", "--threads", "1", "--json"})
		c.SetOut(&out)
		c.SetErr(io.Discard)
		if err := c.Execute(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
		if len(lines) != 1 {
			t.Fatalf("%s: want 1 line of stdout, got %q", what, out.String())
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(lines[0]), &r); err != nil {
			t.Fatalf("%s: %v in %q", what, err, lines[0])
		}
		if r["what"] != what {
			t.Fatalf("what = %v, want %s", r["what"], what)
		}
		fields := []string{"gflops"}
		if what != "peak" {
			fields = append(fields, "tokens_per_s", "tokens_per_s_best", "step_ms", "gflops_best")
			cfg, ok := r["config"].(map[string]any)
			if !ok || cfg["width"] != 32.0 || cfg["heads"] != 1.0 || cfg["batch"] != 16.0 || cfg["rank"] != 8.0 {
				t.Fatalf("%s: config %v", what, r["config"])
			}
		}
		for _, k := range fields {
			v, ok := r[k].(float64)
			if !ok || !(v > 0) || math.IsInf(v, 0) {
				t.Fatalf("%s: %s = %v, want a positive finite number in %s", what, k, r[k], lines[0])
			}
		}
		if r["threads"] != 1.0 {
			t.Fatalf("%s: threads = %v, want 1", what, r["threads"])
		}
		for _, k := range []string{"backend", "core"} {
			if _, ok := r[k].(string); !ok {
				t.Fatalf("%s: no %s in %s", what, k, lines[0])
			}
		}
	}
}

func TestBenchFLOPs(t *testing.T) {
	c := benchConfig{Width: 128, Layers: 4, Context: 128, Vocab: 4096, Batch: 16}
	N := 12.0*4*128*128 + 4096*128
	if got, want := benchTrainFLOPs(c), 6*N*2048+12*4*128*128*2048.0; got != want {
		t.Fatalf("train FLOPs %g, want %g", got, want)
	}
	// 16 rows, prompt 64, 64 new tokens attending to 64..127 positions.
	attended := 0.0
	for i := range 64 {
		attended += float64(64 + i)
	}
	if got, want := benchSampleFLOPs(c, 64, 64), 16*(2*N*64+4*4*128*attended); got != want {
		t.Fatalf("sample FLOPs %g, want %g", got, want)
	}
}
