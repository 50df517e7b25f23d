package main

import (
	"bytes"
	"encoding/json"
	"fmt"
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
	for _, tc := range []struct {
		withAdapter bool
		precision   string // "" = the default, float32
	}{{false, ""}, {true, ""}, {false, "float64"}, {true, "float64"}} {
		withAdapter := tc.withAdapter
		args := []string{"--model", golden, "--data", data}
		prec := model.Float32
		if tc.precision != "" {
			args = append(args, "--precision", tc.precision)
			prec = model.Precision(tc.precision)
		}
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
		sums, counts, err := model.NewInferenceAt(w, prec).SequenceLogProbs([][]int{tok.Encode("The food was")}, [][]int{tok.Encode(" great")})
		if err != nil {
			t.Fatal(err)
		}
		if got.Tokens != 6 || counts[0] != 6 || math.Abs(got.Sum-sums[0]) > 1e-12 || math.Abs(got.Mean-sums[0]/6) > 1e-12 {
			t.Fatalf("adapter=%v precision=%q: got %+v, want sum %g over %d tokens", withAdapter, tc.precision, got, sums[0], counts[0])
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

func TestScoreRejectsBadPrecision(t *testing.T) {
	data := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(data, []byte(`{"prompt":"a","response":"b"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := scoreCmd()
	c.SetArgs([]string{"--model", golden, "--data", data, "--precision", "float16"})
	c.SetOut(&bytes.Buffer{})
	c.SetErr(&bytes.Buffer{})
	err := c.Execute()
	if err == nil || !strings.Contains(err.Error(), "--precision") || !strings.Contains(err.Error(), "float16") {
		t.Fatalf("want an error naming --precision and float16, got %v", err)
	}
}

// golden32 is the larger float32 golden model of hack/golden.py, whose pairs are printable ASCII.
const golden32 = "../../trainer/model/testdata/golden32"

// TestScoreFloat32MatchesPyTorch: bpo score (default float32) on golden32's pairs, as text, agrees
// with PyTorch's float32 response log-prob sums to 1e-4 relative, for the base model (ref_*) and
// with --adapter (policy_*). Responses that end with end-of-text (256) are scored with --eot.
func TestScoreFloat32MatchesPyTorch(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(golden32, "golden.json"))
	if err != nil {
		t.Skipf("float32 golden vectors not present (%v); generate them with /usr/bin/python3 hack/golden.py", err)
	}
	var gold struct {
		Dtype string `json:"dtype"`
		Pairs []struct {
			Prompt   []int `json:"prompt"`
			Chosen   []int `json:"chosen"`
			Rejected []int `json:"rejected"`
		} `json:"pairs"`
		LogPs map[string][]float64 `json:"logps"`
	}
	if err := json.Unmarshal(raw, &gold); err != nil {
		t.Fatal(err)
	}
	if gold.Dtype != "float32" || len(gold.Pairs) == 0 {
		t.Fatalf("golden32/golden.json: dtype %q, %d pairs", gold.Dtype, len(gold.Pairs))
	}
	text := func(ids []int) string {
		b := make([]byte, len(ids))
		for i, id := range ids {
			if id < 32 || id > 126 {
				t.Fatalf("golden32 token %d is not printable ASCII", id)
			}
			b[i] = byte(id)
		}
		return string(b)
	}
	// One input file per --eot setting; want[eot] lists the golden.json entries in line order.
	type entry struct {
		key    string
		pair   int
		tokens int
	}
	var inputs [2]bytes.Buffer
	var want [2][]entry
	for i, p := range gold.Pairs {
		for _, side := range []struct {
			name string
			resp []int
		}{{"chosen", p.Chosen}, {"rejected", p.Rejected}} {
			resp, eot := side.resp, 0
			if n := len(resp); n > 0 && resp[n-1] == 256 {
				resp, eot = resp[:n-1], 1
			}
			line, err := json.Marshal(scoreLine{Prompt: text(p.Prompt), Response: text(resp)})
			if err != nil {
				t.Fatal(err)
			}
			inputs[eot].Write(append(line, '\n'))
			want[eot] = append(want[eot], entry{side.name + "_sum", i, len(side.resp)})
		}
	}
	dir := t.TempDir()
	var worst float64
	scored := 0
	for eot := range inputs {
		if len(want[eot]) == 0 {
			continue
		}
		data := filepath.Join(dir, fmt.Sprintf("eot%d.jsonl", eot))
		if err := os.WriteFile(data, inputs[eot].Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, who := range []string{"ref", "policy"} {
			args := []string{"--model", golden32, "--data", data}
			if eot == 1 {
				args = append(args, "--eot")
			}
			if who == "policy" {
				args = append(args, "--adapter", filepath.Join(golden32, "adapter.safetensors"))
			}
			var out bytes.Buffer
			c := scoreCmd()
			c.SetArgs(args)
			c.SetOut(&out)
			if err := c.Execute(); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != len(want[eot]) {
				t.Fatalf("%v: %d output lines, want %d", args, len(lines), len(want[eot]))
			}
			for n, l := range lines {
				var got scoreOut
				if err := json.Unmarshal([]byte(l), &got); err != nil {
					t.Fatal(err)
				}
				e := want[eot][n]
				ref := gold.LogPs[who+"_"+e.key][e.pair]
				d := math.Abs(got.Sum-ref) / math.Abs(ref)
				if got.Tokens != e.tokens || !(d <= 1e-4) {
					t.Errorf("%s %s pair %d (eot %v): bpo score sum %.9g over %d tokens, PyTorch float32 %.9g over %d (relative diff %.3g)",
						who, e.key, e.pair, eot == 1, got.Sum, got.Tokens, ref, e.tokens, d)
				}
				worst = math.Max(worst, d)
				scored++
			}
		}
	}
	if scored != 4*len(gold.Pairs) {
		t.Fatalf("scored %d sequences, want %d", scored, 4*len(gold.Pairs))
	}
	t.Logf("bpo score vs PyTorch float32: %d sums, max relative diff %.3g", scored, worst)
}

// TestScoreReadsReferencesAndTotals: a {prompt, reference} line (the task's eval.jsonl) is scored
// as its response, the summary on stderr is the summed NLL over the response bytes and tokens, and
// a line with both fields is refused by number.
func TestScoreReadsReferencesAndTotals(t *testing.T) {
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.jsonl")
	resp := filepath.Join(dir, "resp.jsonl")
	os.WriteFile(ref, []byte(`{"prompt":"The food was","reference":" great"}`+"\n"+`{"prompt":"A","reference":" bad day"}`+"\n"), 0o644)
	os.WriteFile(resp, []byte(`{"prompt":"The food was","response":" great"}`+"\n"+`{"prompt":"A","response":" bad day"}`+"\n"), 0o644)
	run := func(data string) (string, string) {
		var out, errOut bytes.Buffer
		c := scoreCmd()
		c.SetArgs([]string{"--model", golden, "--data", data, "--eot"})
		c.SetOut(&out)
		c.SetErr(&errOut)
		if err := c.Execute(); err != nil {
			t.Fatal(err)
		}
		return out.String(), errOut.String()
	}
	refOut, refTotal := run(ref)
	respOut, respTotal := run(resp)
	if refOut != respOut || refTotal != respTotal {
		t.Fatalf("reference lines scored differently from response lines:\n%s%s\n%s%s", refOut, refTotal, respOut, respTotal)
	}
	var nll float64
	tokens := 0
	for _, l := range strings.Split(strings.TrimSpace(respOut), "\n") {
		var o scoreOut
		if err := json.Unmarshal([]byte(l), &o); err != nil {
			t.Fatal(err)
		}
		nll -= o.Sum
		tokens += o.Tokens
	}
	// Byte tokenizer with --eot: a token per byte (6 + 8) and one end-of-text per response.
	if tokens != 16 {
		t.Fatalf("tokens %d, want 16 (14 bytes and 2 end-of-texts)", tokens)
	}
	want := fmt.Sprintf("score: 2 responses, 16 tokens, 14 bytes: %.4f nats/byte, %.4f nats/token\n", nll/14, nll/16)
	if respTotal != want {
		t.Fatalf("summary %q, want %q", respTotal, want)
	}

	both := filepath.Join(dir, "both.jsonl")
	os.WriteFile(both, []byte(`{"prompt":"a","response":"b"}`+"\n"+`{"prompt":"a","response":"b","reference":"c"}`+"\n"), 0o644)
	c := scoreCmd()
	c.SetArgs([]string{"--model", golden, "--data", both})
	c.SetOut(&bytes.Buffer{})
	c.SetErr(&bytes.Buffer{})
	if err := c.Execute(); err == nil || !strings.Contains(err.Error(), "record 2") || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("want an error naming record 2 and both fields, got %v", err)
	}
}
