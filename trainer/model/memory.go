package model

// Memory estimates, checked against the container's memory limit (memlimit.go) before a model is
// loaded or a training graph is built, so that a model too large for the pod fails with a message
// naming its dimensions instead of being OOM-killed without a termination message.

import (
	"fmt"
	"math"
	"os"
	"runtime/metrics"
)

// memoryHeadroom is the share of the container's limit an estimate may plan for: the rest is left
// for what the estimates do not count (the Go runtime, garbage between collections, tokenizer,
// datasets, small buffers).
const memoryHeadroom = 0.9

// ParamCount is the number of parameters of the config: 12·n_layer·n_embd² + 13·n_layer·n_embd
// (Conv1D weights and biases, LayerNorms) + (vocab_size+n_positions)·n_embd (embeddings) +
// 2·n_embd (ln_f). It saturates at math.MaxInt64 rather than overflowing.
func (c Config) ParamCount() int64 {
	L, d, V, P := float64(c.NLayer), float64(c.NEmbd), float64(c.VocabSize), float64(c.NPositions)
	return memSat(L*(12*d*d+13*d) + (V+P)*d + 2*d)
}

// ParamBytes is the memory of the weights as Weights holds them: float64 master copies, 8 bytes
// per parameter.
func (c Config) ParamBytes() int64 { return memSat(8 * float64(c.ParamCount())) }

// TrainingBytes estimates the memory a training graph (NewTrainer, NewLoRALMTrainer: rank > 0;
// NewLMTrainer: rank 0, every base tensor trained) allocates for batch sequences of seqLen tokens in
// precision p, beyond the weights themselves, once it has run a step: what the ops keep (every op
// owns its output buffer, reused from step to step) plus the gradients a step returns. With
// N = batch·seqLen, d = n_embd, V = vocab_size, H = n_head, e = 4 (float32) or 8 (float64) bytes:
//
//   - per layer, forward: about 22·N·d values (LayerNorm outputs, qkv 3d, attention, projections,
//     the MLP's 4d activation, its GELU output and cached derivative, the residual sums) and the
//     attention probabilities batch·H·seqLen² (cached for the backward);
//   - per layer, backward: about 18·N·d values (input gradients of every op, residual sums);
//   - logits and their gradient, 2·N·V values, and a few N·d around the embedding and ln_f;
//   - float32: a converted copy of every base tensor the graph reads (4 bytes per parameter);
//   - rank 0: the weight gradients in e bytes (three tables for wte: lookup, tied projection and
//     their sum) and as the float64 Grads a step returns; rank > 0: the same for the adapter's
//     18·n_layer·rank·n_embd values, plus the x·A caches (4·N·rank per layer).
//
// Against runtime.MemStats for small configs where activations, or logits and attention, dominate
// (memory_test.go) it is 1.0-1.2 times what a trainer holds after a step; a step also allocates and
// drops a little more (gorgonia re-allocates the residual sums: under 20% of the estimate there).
// An optimizer's state (AdamW: 16 bytes per trained parameter) is not included.
func TrainingBytes(cfg Config, batch, seqLen, rank int, p Precision) int64 {
	e := 8.0
	if p.orDefault() == Float32 {
		e = 4
	}
	N, T, B := float64(batch)*float64(seqLen), float64(seqLen), float64(batch)
	d, L, V, H := float64(cfg.NEmbd), float64(cfg.NLayer), float64(cfg.VocabSize), float64(cfg.NHead)
	r := float64(rank)
	params := float64(cfg.ParamCount())

	perLayer := (22+18)*N*d + B*H*T*T
	acts := L*perLayer + 2*N*float64(cfg.VocabSize) + 6*N*d
	bytes := e * acts
	bytes += 8 * 6 * N // float64 data vectors, log-sum-exps, per-row terms
	if e == 4 {
		bytes += 4 * params // float32 copies of the base tensors
	}
	if rank == 0 {
		trained := params + 2*V*d // wte's gradient is three tables: lookup, tied logits, their sum
		bytes += e*trained + 8*params
	} else {
		adapter := 18 * L * r * d
		bytes += e*(2*adapter+L*4*N*r) + 8*adapter
	}
	return memSat(bytes)
}

// CheckMemory reports an error when need more bytes, on top of the Go heap in use (live at the last
// collection), would exceed 90% of the container's memory limit (MemoryLimit). what names the
// thing that needs the memory ("model: dir/config.json (n_layer=…): loading the weights"). Without
// a limit it returns nil.
func CheckMemory(what string, need int64) error {
	limit, ok, err := MemoryLimit()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !ok {
		return nil
	}
	inUse := memLiveHeap()
	if float64(need)+float64(inUse) <= memoryHeadroom*float64(limit) {
		return nil
	}
	using := ""
	if inUse > 0 {
		using = fmt.Sprintf(" on top of the %s in use", FormatBytes(inUse))
	}
	return fmt.Errorf("%s needs ~%s of memory%s, the container's limit is %s (at most %.0f%% of it may be planned; set resources.limits.memory or use a smaller model)",
		what, FormatBytes(need), using, FormatBytes(limit), 100*memoryHeadroom)
}

// CheckMemory reports an error when the weights of this config (ParamBytes) would not fit in the
// container's memory limit: call it before Init or loading weights of a config from outside.
func (c Config) CheckMemory() error {
	if err := c.Validate(); err != nil {
		return err
	}
	return CheckMemory(fmt.Sprintf("model: %s: the weights", c.describe()), c.ParamBytes())
}

// checkLoadMemory is LoadWeights' check, between reading config.json and reading the tensors: the
// float64 weights plus the safetensors file, which is read whole.
func checkLoadMemory(cfg Config, configPath, weightsPath string) error {
	need := cfg.ParamBytes()
	if fi, err := os.Stat(weightsPath); err == nil {
		need = memSat(float64(need) + float64(fi.Size()))
	}
	return CheckMemory(fmt.Sprintf("model: %s %s: loading the model", configPath, cfg.describe()), need)
}

// checkTrainerMemory is the trainers' check before they build a graph (rank 0: full-parameter).
func checkTrainerMemory(cfg Config, batch, seqLen, rank int, p Precision) error {
	mode := "full-parameter"
	if rank > 0 {
		mode = fmt.Sprintf("LoRA rank %d", rank)
	}
	what := fmt.Sprintf("model: training graph for %s (batch %d × %d tokens, %s, %s)", cfg.describe(), batch, seqLen, mode, p.orDefault())
	return CheckMemory(what, TrainingBytes(cfg, batch, seqLen, rank, p))
}

// describe names a config's dimensions by their config.json keys.
func (c Config) describe() string {
	return fmt.Sprintf("(n_layer=%d, n_embd=%d, n_head=%d, vocab_size=%d, n_positions=%d: %d parameters)",
		c.NLayer, c.NEmbd, c.NHead, c.VocabSize, c.NPositions, c.ParamCount())
}

// FormatBytes renders a byte count in GiB, MiB or KiB.
func FormatBytes(n int64) string {
	f := float64(n)
	switch {
	case f >= 1<<30:
		return fmt.Sprintf("%.1f GiB", f/(1<<30))
	case f >= 1<<20:
		return fmt.Sprintf("%.1f MiB", f/(1<<20))
	case f >= 1<<10:
		return fmt.Sprintf("%.1f KiB", f/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// memLiveHeap is the Go heap live at the last garbage collection (0 if unknown).
func memLiveHeap() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(min(s[0].Value.Uint64(), math.MaxInt64))
}

// memSat converts a non-negative float64 byte or element count to int64, saturating.
func memSat(x float64) int64 {
	if x >= math.MaxInt64 || math.IsNaN(x) {
		return math.MaxInt64
	}
	if x < 0 {
		return 0
	}
	return int64(x)
}
