package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// golden is the PyTorch-made checkpoint (hack/golden.py): a foreign file bpo score must read.
const golden = "../../trainer/model/testdata/golden"

func TestScorePrintsResponseLogProbs(t *testing.T) {
	data := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(data, []byte(`{"prompt":"The food was","response":" great"}`+"\n\n"+`{"prompt":"A","response":""}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, withAdapter := range []bool{false, true} {
		args := []string{"--model", golden, "--data", data}
		w, err := model.LoadWeights(golden)
		if err != nil {
			t.Fatal(err)
		}
		if withAdapter {
			args = append(args, "--adapter", filepath.Join(golden, "adapter.safetensors"))
			a, err := model.LoadAdapterFor(filepath.Join(golden, "adapter.safetensors"), w.Config)
			if err != nil {
				t.Fatal(err)
			}
			w = model.MergeMean(w, []*model.Adapter{a})
		}
		var out bytes.Buffer
		c := scoreCmd()
		c.SetArgs(args)
		c.SetOut(&out)
		if err := c.Execute(); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 2 {
			t.Fatalf("want 2 output lines, got %q", out.String())
		}
		var got scoreOut
		if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
			t.Fatal(err)
		}
		tok := tokenizer.Byte{}
		sums, counts, err := model.NewInference(w).SequenceLogProbs([][]int{tok.Encode("The food was")}, [][]int{tok.Encode(" great")})
		if err != nil {
			t.Fatal(err)
		}
		if got.Tokens != 6 || counts[0] != 6 || math.Abs(got.Sum-sums[0]) > 1e-12 || math.Abs(got.Mean-sums[0]/6) > 1e-12 {
			t.Fatalf("adapter=%v: got %+v, want sum %g over %d tokens", withAdapter, got, sums[0], counts[0])
		}
	}
}

func TestScoreNamesBadLine(t *testing.T) {
	data := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(data, []byte(`{"prompt":"a","response":"b"}`+"\n"+`{"prompt":"a","respons":"b"}`+"\n"), 0o644)
	c := scoreCmd()
	c.SetArgs([]string{"--model", golden, "--data", data})
	c.SetOut(&bytes.Buffer{})
	err := c.Execute()
	if err == nil || !strings.Contains(err.Error(), "bad.jsonl:2") {
		t.Fatalf("want an error naming bad.jsonl:2, got %v", err)
	}
}
