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
