package model

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// memHeap is the live heap after two collections.
func memHeap() (heap, total uint64) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.TotalAlloc
}

// TestLoadWeightsHugeNLayerFailsFast is the defect's reproduction: a config.json with n_layer
// 100000000 used to make LoadWeights size a parameter map for 1.2e9 tensors (and then the
// weights) until the container was OOM-killed without a termination message. It must fail on
// the n_layer bound, naming the key, without allocating.
func TestLoadWeightsHugeNLayerFailsFast(t *testing.T) {
	t.Setenv(MemoryLimitEnv, "max")
	dir := t.TempDir()
	conf := `{"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 100000000, "n_head": 12}`
	if err := os.WriteFile(filepath.Join(dir, ConfigFileName), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// A (tiny, wrong) weights file: the config must be rejected before it is read.
	if err := os.WriteFile(filepath.Join(dir, WeightsFileName), []byte("not safetensors"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, before := memHeap()
	_, err := LoadWeights(dir)
	_, after := memHeap()
	if err == nil {
		t.Fatal("LoadWeights accepted n_layer 100000000")
	}
	t.Log(err)
	for _, want := range []string{ConfigFileName, "n_layer", "100000000", "256"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if grew := after - before; grew > 10<<20 {
		t.Errorf("LoadWeights allocated %d MB before failing", grew>>20)
	}
}

// TestLoadWeightsOverMemoryLimit: a config within the bounds whose weights do not fit in the
// container's limit fails before the tensors are read, naming the dimensions and both sizes.
func TestLoadWeightsOverMemoryLimit(t *testing.T) {
	cfg := Config{ModelType: "gpt2", VocabSize: 50257, NPositions: 1024, NEmbd: 1600, NLayer: 48, NHead: 25,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 50256, EOSTokenID: 50256} // gpt2-xl
	if err := cfg.Validate(); err != nil {
		t.Fatalf("gpt2-xl must be within the bounds: %v", err)
	}
	dir := t.TempDir()
	if err := WriteConfig(filepath.Join(dir, ConfigFileName), cfg); err != nil {
		t.Fatal(err)
	}
	// No weights file at all: the memory check comes first.
	t.Setenv(MemoryLimitEnv, "4294967296") // 4 GiB; gpt2-xl is 12.5 GB as float64
	_, err := LoadWeights(dir)
	if err == nil {
		t.Fatal("LoadWeights accepted a 12.5 GB model under a 4 GiB limit")
	}
	t.Log(err)
	for _, want := range []string{ConfigFileName, "n_layer=48", "n_embd=1600", "11.6 GiB", "4.0 GiB", "resources.limits.memory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if err := cfg.CheckMemory(); err == nil || !strings.Contains(err.Error(), "4.0 GiB") {
		t.Errorf("Config.CheckMemory: %v", err)
	}
	// A bad override is an error, not "no limit".
	t.Setenv(MemoryLimitEnv, "lots")
	if _, err := LoadWeights(dir); err == nil || !strings.Contains(err.Error(), MemoryLimitEnv) {
		t.Errorf("BPO_MEMORY_LIMIT=lots: %v", err)
	}
	// Under a large enough limit the load proceeds (and fails on the missing weights file).
	t.Setenv(MemoryLimitEnv, "64000000000")
	if _, err := LoadWeights(dir); err == nil || !strings.Contains(err.Error(), WeightsFileName) {
		t.Errorf("under a 64 GB limit: %v", err)
	}
}

// TestTrainersCheckMemory: both trainers refuse a graph that does not fit.
func TestTrainersCheckMemory(t *testing.T) {
	cfg := grTinyConfig()
	w := grRandomWeights(rand.New(rand.NewPCG(1, 2)), cfg)
	t.Setenv(MemoryLimitEnv, "1024")
	if _, err := NewTrainer(w, 2, 2, 8, Objective{}); err == nil || !strings.Contains(err.Error(), "training graph") {
		t.Errorf("NewTrainer under a 1 KiB limit: %v", err)
	}
	if _, err := NewLMTrainer(w, 2, 8, LMOptions{}); err == nil || !strings.Contains(err.Error(), "full-parameter") {
		t.Errorf("NewLMTrainer under a 1 KiB limit: %v", err)
	}
	if _, err := NewLoRALMTrainer(w, 2, 2, 8, LMOptions{}); err == nil || !strings.Contains(err.Error(), "LoRA rank 2") {
		t.Errorf("NewLoRALMTrainer under a 1 KiB limit: %v", err)
	}
	t.Setenv(MemoryLimitEnv, "max")
	if _, err := NewTrainer(w, 2, 2, 8, Objective{}); err != nil {
		t.Errorf("NewTrainer without a limit: %v", err)
	}
}

func TestParseMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		in      string
		limit   int64
		ok, err bool
	}{
		{"max\n", 0, false, false},
		{"1073741824\n", 1 << 30, true, false},
		{"  536870912 ", 512 << 20, true, false},
		{"9223372036854771712\n", 0, false, false}, // cgroup v1 "unlimited"
		{"18446744073709551615", 0, false, false},
		{"", 0, false, true},
		{"0\n", 0, false, true},
		{"-1\n", 0, false, true},
		{"1G\n", 0, false, true},
		{"garbage", 0, false, true},
	} {
		limit, ok, err := ParseMemoryLimit(tc.in)
		if limit != tc.limit || ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("ParseMemoryLimit(%q) = %d, %v, %v; want %d, %v, error %v", tc.in, limit, ok, err, tc.limit, tc.ok, tc.err)
		}
	}
}

func TestMemoryLimitFromCgroupFiles(t *testing.T) {
	t.Setenv(MemoryLimitEnv, "")
	dir := t.TempDir()
	v2, v1 := filepath.Join(dir, "memory.max"), filepath.Join(dir, "memory.limit_in_bytes")
	oldV2, oldV1 := memCgroupV2File, memCgroupV1File
	t.Cleanup(func() { memCgroupV2File, memCgroupV1File = oldV2, oldV1 })
	memCgroupV2File, memCgroupV1File = v2, v1
	check := func(what string, wantLimit int64, wantOK bool) {
		t.Helper()
		limit, ok, err := MemoryLimit()
		if err != nil || limit != wantLimit || ok != wantOK {
			t.Errorf("%s: MemoryLimit() = %d, %v, %v; want %d, %v", what, limit, ok, err, wantLimit, wantOK)
		}
	}
	check("no cgroup files", 0, false)
	os.WriteFile(v1, []byte("2147483648\n"), 0o644)
	check("cgroup v1", 2<<30, true)
	os.WriteFile(v2, []byte("max\n"), 0o644)
	check("cgroup v2 max", 0, false)
	os.WriteFile(v2, []byte("1073741824\n"), 0o644)
	check("cgroup v2", 1<<30, true)
	os.WriteFile(v2, []byte("garbage\n"), 0o644)
	check("unparsable cgroup file", 0, false)
	t.Setenv(MemoryLimitEnv, "12345")
	check("override", 12345, true)
}

func TestConfigValidateBounds(t *testing.T) {
	base := Config{ModelType: "gpt2", VocabSize: 50257, NPositions: 1024, NEmbd: 768, NLayer: 12, NHead: 12,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 50256, EOSTokenID: 50256}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" = valid
	}{
		{"gpt2", func(c *Config) {}, ""},
		{"gpt2-xl", func(c *Config) { c.NLayer, c.NEmbd, c.NHead = 48, 1600, 25 }, ""},
		{"vocab_size and n_positions at their bounds", func(c *Config) {
			c.NLayer, c.NEmbd, c.NHead, c.VocabSize, c.NPositions = 16, 4096, 32, MaxVocabSize, MaxNPositions
		}, ""},
		{"n_embd at its bound", func(c *Config) { c.NLayer, c.NEmbd, c.NHead = 4, MaxNEmbd, 128 }, ""},
		{"n_layer at its bound", func(c *Config) { c.NLayer = MaxNLayer }, ""},
		{"n_layer 100000000", func(c *Config) { c.NLayer = 100000000 }, "n_layer 100000000 exceeds the supported maximum 256"},
		{"n_layer 257", func(c *Config) { c.NLayer = MaxNLayer + 1 }, "n_layer 257"},
		{"n_embd", func(c *Config) { c.NEmbd, c.NHead = 32768, 16 }, "n_embd 32768 exceeds the supported maximum 16384"},
		{"n_head", func(c *Config) { c.NEmbd, c.NHead = 64, 128 }, "n_head 128 exceeds n_embd 64"},
		{"vocab_size", func(c *Config) { c.VocabSize = 1<<20 + 1 }, "vocab_size 1048577 exceeds the supported maximum 1048576"},
		{"n_positions", func(c *Config) { c.NPositions = 1<<16 + 1 }, "n_positions 65537 exceeds the supported maximum 65536"},
		{"parameter count", func(c *Config) { c.NLayer, c.NEmbd, c.NHead = 256, 16384, 128 }, "parameters"},
		{"negative n_layer", func(c *Config) { c.NLayer = -1 }, "n_layer must be > 0"},
		{"n_head 0", func(c *Config) { c.NHead = 0 }, "multiple of n_head"},
	} {
		c := base
		tc.edit(&c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	// DecodeConfig rejects the bomb with the key named, too.
	if _, err := DecodeConfig([]byte(`{"n_layer": 100000000}`)); err == nil || !strings.Contains(err.Error(), "n_layer") {
		t.Errorf("DecodeConfig: %v", err)
	}
}

func TestParamCount(t *testing.T) {
	for _, cfg := range []Config{grTinyConfig(), {VocabSize: 50257, NPositions: 1024, NEmbd: 768, NLayer: 12, NHead: 12}} {
		n := 0
		for _, s := range cfg.ParamShapes() {
			n += wioNumel(s)
		}
		if int64(n) != cfg.ParamCount() || cfg.ParamBytes() != 8*int64(n) {
			t.Errorf("%+v: ParamCount %d ParamBytes %d, the shapes hold %d", cfg, cfg.ParamCount(), cfg.ParamBytes(), n)
		}
	}
	if got := (Config{VocabSize: 50257, NPositions: 1024, NEmbd: 768, NLayer: 12, NHead: 12}).ParamCount(); got != 124439808 {
		t.Errorf("gpt2 has 124439808 parameters, ParamCount says %d", got)
	}
}

// TestTrainingBytesMatchesMeasured compares TrainingBytes with what a trainer holds on the heap
// after a step (runtime.MemStats after a collection, trainer and step output alive) for small
// configs, and logs what a further step allocates and drops (gorgonia re-allocates the residual
// sums on every run).
func TestTrainingBytesMatchesMeasured(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and steps four trainers")
	}
	t.Setenv(MemoryLimitEnv, "max")
	// activations dominate; logits and attention probabilities dominate
	wide := Config{ModelType: "gpt2", VocabSize: 257, NPositions: 64, NEmbd: 128, NLayer: 2, NHead: 4,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 256, EOSTokenID: 256}
	narrow := wide
	narrow.VocabSize, narrow.NEmbd, narrow.NHead, narrow.NPositions = 4096, 32, 8, 128
	for _, c := range []struct {
		cfg     Config
		B, T, r int
	}{{wide, 8, 64, 4}, {narrow, 4, 128, 2}} {
		memMeasureTrainers(t, c.cfg, c.B, c.T, c.r)
	}
}

func memMeasureTrainers(t *testing.T, cfg Config, B, T, rank int) {
	rng := rand.New(rand.NewPCG(3, 4))
	w := grRandomWeights(rng, cfg)
	batch := grRandomBatch(rng, cfg, B, T)
	adapter := grRandomAdapter(rng, cfg, rank, 8, 0.1)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Each case builds a trainer and returns its step (the step output is kept alive by the caller).
	pref := func(p Precision) func() func() any {
		return func() func() any {
			tr, err := NewTrainer(w, rank, B, T, Objective{Loss: grTestLoss("DPO", 0.1), Precision: p})
			must(err)
			return func() any {
				out, err := tr.Step(adapter, batch, make([]float64, B))
				must(err)
				return []any{tr, out}
			}
		}
	}
	lm := func(rank int, a *Adapter) func() func() any {
		return func() func() any {
			var tr *LMTrainer
			var err error
			if rank == 0 {
				tr, err = NewLMTrainer(w, B, T, LMOptions{})
			} else {
				tr, err = NewLoRALMTrainer(w, rank, B, T, LMOptions{})
			}
			must(err)
			return func() any {
				out, err := tr.Step(a, batch)
				must(err)
				return []any{tr, out}
			}
		}
	}
	for _, tc := range []struct {
		name  string
		rank  int
		p     Precision
		build func() func() any
	}{
		{"preference LoRA float32", rank, Float32, pref(Float32)},
		{"preference LoRA float64", rank, Float64, pref(Float64)},
		{"LM full float32", 0, Float32, lm(0, nil)},
		{"LM LoRA float32", rank, Float32, lm(rank, adapter)},
	} {
		before, _ := memHeap()
		step := tc.build()
		keep := step()
		after, total := memHeap()
		keep = step()
		_, total2 := memHeap()
		runtime.KeepAlive(keep)
		measured := int64(after) - int64(before)
		est := TrainingBytes(cfg, B, T, tc.rank, tc.p)
		ratio := float64(est) / float64(measured)
		t.Logf("d%d L%d V%d B%d T%d %s: estimate %s, measured %s (ratio %.2f); a further step allocates %s",
			cfg.NEmbd, cfg.NLayer, cfg.VocabSize, B, T, tc.name, FormatBytes(est), FormatBytes(measured), ratio, FormatBytes(int64(total2-total)))
		if ratio < 0.5 || ratio > 2 {
			t.Errorf("%s: TrainingBytes %d is not within 2x of the measured %d", tc.name, est, measured)
		}
	}
}
