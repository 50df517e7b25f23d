package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/trainer/model"
)

// TestPretrainFloat16: bpo pretrain --dtype float16 writes an F16 model folder, reports the
// held-out loss of the model as written next to the float32 one (the rounding costs little), and
// a bad --dtype is refused before any training, naming the flag and the choices.
func TestPretrainFloat16(t *testing.T) {
	dir := t.TempDir()
	corpus := filepath.Join(dir, "corpus.txt")
	var b strings.Builder
	for i := range 200 {
		fmt.Fprintf(&b, "the food was good and the staff were kind %d times.\n", i%7)
	}
	if err := os.WriteFile(corpus, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(out string, extra ...string) (string, error) {
		var buf bytes.Buffer
		c := pretrainCmd()
		c.SetArgs(append([]string{"--corpus", corpus, "--out", out, "--width", "16", "--layers", "1", "--heads", "2",
			"--context", "32", "--steps", "6", "--batch", "2", "--samples", "0", "--prompt", ""}, extra...))
		c.SetOut(&buf)
		c.SetErr(&buf)
		err := c.Execute()
		return buf.String(), err
	}
	out := filepath.Join(dir, "m16")
	log, err := run(out, "--dtype", "float16")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	m := regexp.MustCompile(`held-out ([0-9.]+) nats/byte \(`).FindStringSubmatch(log)
	m16 := regexp.MustCompile(`held-out ([0-9.]+) nats/byte as written \(float16\)`).FindStringSubmatch(log)
	if m == nil || m16 == nil {
		t.Fatalf("want both held-out lines:\n%s", log)
	}
	var h32, h16 float64
	fmt.Sscan(m[1], &h32)
	fmt.Sscan(m16[1], &h16)
	if h16 <= 0 || h16 > h32*1.01 || h16 < h32*0.99 {
		t.Errorf("held-out %v as float32, %v as written in float16: want within 1%%", h32, h16)
	}
	raw, err := os.ReadFile(filepath.Join(out, model.WeightsFileName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw[:200], []byte(`"dtype":"F16"`)) {
		t.Errorf("model.safetensors is not F16: %.200s", raw)
	}
	if _, err := model.LoadWeights(out); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if log, err := run(bad, "--dtype", "bf16"); err == nil || !strings.Contains(err.Error(), "--dtype") || !strings.Contains(err.Error(), "float16") {
		t.Fatalf("--dtype bf16: error %v, want one naming --dtype and the choices\n%s", err, log)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("--dtype bf16 wrote %s", bad)
	}
}

// TestSFTJoin: bpo sft --join 2 trains on pairs of texts of one sft.jsonl group, and refuses a
// task without groups, naming the flag and the field, before training; --min-words that leaves
// no text is refused the same way.
func TestSFTJoin(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var corpus, grouped, plain strings.Builder
	for i := range 60 {
		fmt.Fprintf(&corpus, "the food was good and the staff were kind %d times.\n", i%7)
		fmt.Fprintf(&grouped, `{"text":"it was fine %d.","group":"g%d"}`+"\n", i, i%2)
		fmt.Fprintf(&plain, `{"text":"it was fine %d."}`+"\n", i)
	}
	write("corpus.txt", corpus.String())
	model := filepath.Join(dir, "model")
	c := pretrainCmd()
	c.SetArgs([]string{"--corpus", filepath.Join(dir, "corpus.txt"), "--out", model, "--width", "16", "--layers", "1",
		"--heads", "2", "--context", "32", "--steps", "2", "--batch", "2", "--samples", "0", "--prompt", ""})
	c.SetOut(&bytes.Buffer{})
	if err := c.Execute(); err != nil {
		t.Fatal(err)
	}
	sft := func(sftJSONL string, extra ...string) (string, error) {
		task := t.TempDir()
		for name, text := range map[string]string{"sft.jsonl": sftJSONL, "prompts.jsonl": `{"prompt":"it was"}`,
			"eval.jsonl": `{"prompt":"it","reference":" was fine."}`} {
			if err := os.WriteFile(filepath.Join(task, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var buf bytes.Buffer
		c := sftCmd()
		c.SetArgs(append([]string{"--model", model, "--task", task, "--members", "1", "--rank", "2", "--steps", "2",
			"--batch", "2", "--join", "2", "--samples", "0", "--prompt", ""}, extra...))
		c.SetOut(&buf)
		c.SetErr(&buf)
		err := c.Execute()
		return buf.String(), err
	}
	if log, err := sft(plain.String()); err == nil || !strings.Contains(err.Error(), "--join") || !strings.Contains(err.Error(), `"group"`) {
		t.Fatalf("--join without groups: error %v, want one naming --join and the group field\n%s", err, log)
	}
	if log, err := sft(grouped.String(), "--min-words", "9"); err == nil || !strings.Contains(err.Error(), "--min-words 9") {
		t.Fatalf("--min-words 9: error %v, want one naming --min-words\n%s", err, log)
	}
	if _, err := os.Stat(filepath.Join(model, "adapters")); !os.IsNotExist(err) {
		t.Errorf("a refused run wrote adapters")
	}
	log, err := sft(grouped.String(), "--min-words", "3")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if !strings.Contains(log, "(60 texts of 60 with at least 3 words, joined by 2)") {
		t.Errorf("log does not say the texts are joined:\n%s", log)
	}
}
