// Package model holds the GPT-2-architecture decoder: its config, its weights under
// Hugging Face GPT-2 tensor names, LoRA adapters, the gorgonia training graph and a
// pure-Go inference path with a KV cache.
package model

import "fmt"

// Config mirrors the keys of a Hugging Face GPT-2 config.json that we use.
type Config struct {
	ModelType        string   `json:"model_type"`
	Architectures    []string `json:"architectures,omitempty"`
	VocabSize        int      `json:"vocab_size"`
	NPositions       int      `json:"n_positions"`
	NEmbd            int      `json:"n_embd"`
	NLayer           int      `json:"n_layer"`
	NHead            int      `json:"n_head"`
	LayerNormEpsilon float64  `json:"layer_norm_epsilon"`
	// ActivationFunction is "gelu_new" (the tanh approximation), as in GPT-2.
	ActivationFunction string `json:"activation_function"`
	BOSTokenID         int    `json:"bos_token_id"`
	EOSTokenID         int    `json:"eos_token_id"`
}

// Hard bounds on a config's dimensions, checked by Config.Validate before anything is sized from
// them, so that a hostile or mistaken config.json (n_layer: 100000000) fails with a message naming
// the key instead of allocating without end. They are far above the GPT-2 family (gpt2-xl:
// n_layer 48, n_embd 1600, n_head 25, vocab_size 50257, n_positions 1024, 1.56e9 parameters) and
// about GPT-3's size (96 layers, width 12288, 1.75e11 parameters is over MaxParams); whether a model
// within them fits the container is checked separately against its memory limit (memory.go).
const (
	MaxNLayer     = 256
	MaxNEmbd      = 16384
	MaxVocabSize  = 1 << 20
	MaxNPositions = 1 << 16
	// MaxParams bounds ParamCount: 2e10 parameters are 160 GB as float64 master copies.
	MaxParams = 20_000_000_000
)

// Validate reports the first inconsistent or out-of-bounds field by its config.json key. Bounds
// are checked before any product of dimensions is formed (no overflow).
func (c Config) Validate() error {
	switch {
	case c.VocabSize <= 0:
		return fmt.Errorf("config: vocab_size must be > 0, got %d", c.VocabSize)
	case c.VocabSize > MaxVocabSize:
		return fmt.Errorf("config: vocab_size %d exceeds the supported maximum %d", c.VocabSize, MaxVocabSize)
	case c.NPositions <= 0:
		return fmt.Errorf("config: n_positions must be > 0, got %d", c.NPositions)
	case c.NPositions > MaxNPositions:
		return fmt.Errorf("config: n_positions %d exceeds the supported maximum %d", c.NPositions, MaxNPositions)
	case c.NLayer <= 0:
		return fmt.Errorf("config: n_layer must be > 0, got %d", c.NLayer)
	case c.NLayer > MaxNLayer:
		return fmt.Errorf("config: n_layer %d exceeds the supported maximum %d", c.NLayer, MaxNLayer)
	case c.NEmbd > MaxNEmbd:
		return fmt.Errorf("config: n_embd %d exceeds the supported maximum %d", c.NEmbd, MaxNEmbd)
	case c.NHead > 0 && c.NEmbd > 0 && c.NHead > c.NEmbd:
		return fmt.Errorf("config: n_head %d exceeds n_embd %d", c.NHead, c.NEmbd)
	case c.NHead <= 0 || c.NEmbd <= 0 || c.NEmbd%c.NHead != 0:
		return fmt.Errorf("config: n_embd (%d) must be a positive multiple of n_head (%d)", c.NEmbd, c.NHead)
	case c.ParamCount() > MaxParams:
		return fmt.Errorf("config: n_layer %d, n_embd %d, vocab_size %d and n_positions %d make %d parameters (12·n_layer·n_embd² + (vocab_size+n_positions)·n_embd + ...), over the supported maximum %d",
			c.NLayer, c.NEmbd, c.VocabSize, c.NPositions, c.ParamCount(), int64(MaxParams))
	case c.LayerNormEpsilon <= 0:
		return fmt.Errorf("config: layer_norm_epsilon must be > 0, got %g", c.LayerNormEpsilon)
	case c.EOSTokenID < 0 || c.EOSTokenID >= c.VocabSize:
		return fmt.Errorf("config: eos_token_id %d outside the vocabulary [0,%d)", c.EOSTokenID, c.VocabSize)
	}
	return nil
}

// Tensor is a dense row-major float64 array.
type Tensor struct {
	Shape []int
	Data  []float64
}

// NewTensor allocates a zero tensor of the given shape.
func NewTensor(shape ...int) *Tensor {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return &Tensor{Shape: append([]int(nil), shape...), Data: make([]float64, n)}
}

// Clone returns a deep copy.
func (t *Tensor) Clone() *Tensor {
	return &Tensor{Shape: append([]int(nil), t.Shape...), Data: append([]float64(nil), t.Data...)}
}

// Weights are a model's parameters keyed by Hugging Face GPT-2 names
// ("wte.weight", "h.0.attn.c_attn.weight", ... "ln_f.bias"). Conv1D weights are [in, out].
// The output projection is tied to wte.weight.
type Weights struct {
	Config  Config
	Tensors map[string]*Tensor
}

// LoRATargets are the Conv1D projections that carry LoRA adapters, per layer.
var LoRATargets = []string{"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}

// Adapter is one LoRA adapter set: for each target projection "h.N.<target>",
// tensors "h.N.<target>.lora_A" [in, r] and "h.N.<target>.lora_B" [r, out].
// The effective weight is W + (Alpha/Rank) * A·B.
type Adapter struct {
	Rank    int
	Alpha   float64
	Tensors map[string]*Tensor
}

// Scale is alpha/r.
func (a *Adapter) Scale() float64 { return a.Alpha / float64(a.Rank) }
