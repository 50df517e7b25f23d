package model

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
)

// File names inside a model directory (Hugging Face layout).
const (
	ConfigFileName  = "config.json"
	WeightsFileName = "model.safetensors"
)

// hfConfigFile is config.json as written by SaveWeights: the keys of a Hugging Face
// GPT2Config, in a stable order.
type hfConfigFile struct {
	ActivationFunction         string   `json:"activation_function"`
	Architectures              []string `json:"architectures"`
	AttnPdrop                  float64  `json:"attn_pdrop"`
	BOSTokenID                 int      `json:"bos_token_id"`
	EmbdPdrop                  float64  `json:"embd_pdrop"`
	EOSTokenID                 int      `json:"eos_token_id"`
	InitializerRange           float64  `json:"initializer_range"`
	LayerNormEpsilon           float64  `json:"layer_norm_epsilon"`
	ModelType                  string   `json:"model_type"`
	NCtx                       int      `json:"n_ctx"`
	NEmbd                      int      `json:"n_embd"`
	NHead                      int      `json:"n_head"`
	NInner                     *int     `json:"n_inner"`
	NLayer                     int      `json:"n_layer"`
	NPositions                 int      `json:"n_positions"`
	ReorderAndUpcastAttn       bool     `json:"reorder_and_upcast_attn"`
	ResidPdrop                 float64  `json:"resid_pdrop"`
	ScaleAttnByInverseLayerIdx bool     `json:"scale_attn_by_inverse_layer_idx"`
	ScaleAttnWeights           bool     `json:"scale_attn_weights"`
	TieWordEmbeddings          bool     `json:"tie_word_embeddings"`
	TorchDtype                 string   `json:"torch_dtype"`
	UseCache                   bool     `json:"use_cache"`
	VocabSize                  int      `json:"vocab_size"`
}

// EncodeConfig renders cfg as a Hugging Face GPT-2 config.json (model_type gpt2,
// architectures [GPT2LMHeadModel], activation gelu_new, tied embeddings, no dropout).
func EncodeConfig(cfg Config) ([]byte, error) { return encodeConfig(cfg, "float32") }

// encodeConfig is EncodeConfig with the torch_dtype of the weights file beside it ("float32" or
// "float16"): Hugging Face loads the weights in that type when asked for torch_dtype="auto".
func encodeConfig(cfg Config, torchDtype string) ([]byte, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	act := cfg.ActivationFunction
	if act == "" {
		act = "gelu_new"
	}
	f := hfConfigFile{
		ActivationFunction: act,
		Architectures:      []string{"GPT2LMHeadModel"},
		BOSTokenID:         cfg.BOSTokenID,
		EOSTokenID:         cfg.EOSTokenID,
		InitializerRange:   gpt2InitStd,
		LayerNormEpsilon:   cfg.LayerNormEpsilon,
		ModelType:          "gpt2",
		NCtx:               cfg.NPositions,
		NEmbd:              cfg.NEmbd,
		NHead:              cfg.NHead,
		NLayer:             cfg.NLayer,
		NPositions:         cfg.NPositions,
		ScaleAttnWeights:   true,
		TieWordEmbeddings:  true,
		TorchDtype:         torchDtype,
		UseCache:           true,
		VocabSize:          cfg.VocabSize,
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// DecodeConfig parses a Hugging Face GPT-2 config.json. Keys that are absent take
// GPT2Config's defaults. Settings this implementation does not support (another
// model_type or activation, n_inner other than 4*n_embd, unscaled or layer-scaled
// attention, cross-attention) are errors naming the key.
func DecodeConfig(data []byte) (Config, error) {
	// Hugging Face GPT2Config defaults.
	cfg := Config{
		ModelType:          "gpt2",
		VocabSize:          50257,
		NPositions:         1024,
		NEmbd:              768,
		NLayer:             12,
		NHead:              12,
		LayerNormEpsilon:   1e-5,
		ActivationFunction: "gelu_new",
		BOSTokenID:         50256,
		EOSTokenID:         50256,
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	var extra struct {
		NInner                     *int  `json:"n_inner"`
		ScaleAttnWeights           *bool `json:"scale_attn_weights"`
		ScaleAttnByInverseLayerIdx *bool `json:"scale_attn_by_inverse_layer_idx"`
		AddCrossAttention          *bool `json:"add_cross_attention"`
		TieWordEmbeddings          *bool `json:"tie_word_embeddings"`
	}
	if err := json.Unmarshal(data, &extra); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	switch {
	case cfg.ModelType != "gpt2":
		return Config{}, fmt.Errorf("config: model_type %q is not supported, want \"gpt2\"", cfg.ModelType)
	case cfg.ActivationFunction != "gelu_new" && cfg.ActivationFunction != "gelu_pytorch_tanh":
		return Config{}, fmt.Errorf("config: activation_function %q is not supported, want \"gelu_new\"", cfg.ActivationFunction)
	case extra.NInner != nil && *extra.NInner != 4*cfg.NEmbd:
		return Config{}, fmt.Errorf("config: n_inner %d is not supported, want null or 4*n_embd = %d", *extra.NInner, 4*cfg.NEmbd)
	case extra.ScaleAttnWeights != nil && !*extra.ScaleAttnWeights:
		return Config{}, fmt.Errorf("config: scale_attn_weights false is not supported")
	case extra.ScaleAttnByInverseLayerIdx != nil && *extra.ScaleAttnByInverseLayerIdx:
		return Config{}, fmt.Errorf("config: scale_attn_by_inverse_layer_idx true is not supported")
	case extra.AddCrossAttention != nil && *extra.AddCrossAttention:
		return Config{}, fmt.Errorf("config: add_cross_attention true is not supported")
	case extra.TieWordEmbeddings != nil && !*extra.TieWordEmbeddings:
		return Config{}, fmt.Errorf("config: tie_word_embeddings false is not supported (the output projection is wte.weight)")
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// ReadConfig reads and checks a config.json file; errors name the file.
func ReadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	cfg, err := DecodeConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// WriteConfig writes cfg as a Hugging Face config.json, atomically.
func WriteConfig(path string, cfg Config) error {
	b, err := EncodeConfig(cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return WriteFileAtomic(path, b)
}

// ParamShapes lists every parameter tensor of the model under its Hugging Face GPT-2
// name, with its shape. Conv1D weights are [in, out]; the MLP width is 4*n_embd.
func (c Config) ParamShapes() map[string][]int {
	d := c.NEmbd
	m := map[string][]int{
		"wte.weight":  {c.VocabSize, d},
		"wpe.weight":  {c.NPositions, d},
		"ln_f.weight": {d},
		"ln_f.bias":   {d},
	}
	for l := 0; l < c.NLayer; l++ {
		p := "h." + strconv.Itoa(l) + "."
		m[p+"ln_1.weight"] = []int{d}
		m[p+"ln_1.bias"] = []int{d}
		m[p+"attn.c_attn.weight"] = []int{d, 3 * d}
		m[p+"attn.c_attn.bias"] = []int{3 * d}
		m[p+"attn.c_proj.weight"] = []int{d, d}
		m[p+"attn.c_proj.bias"] = []int{d}
		m[p+"ln_2.weight"] = []int{d}
		m[p+"ln_2.bias"] = []int{d}
		m[p+"mlp.c_fc.weight"] = []int{d, 4 * d}
		m[p+"mlp.c_fc.bias"] = []int{4 * d}
		m[p+"mlp.c_proj.weight"] = []int{4 * d, d}
		m[p+"mlp.c_proj.bias"] = []int{d}
	}
	return m
}

// ParamNames returns the names of ParamShapes, sorted.
func (c Config) ParamNames() []string {
	return wioSortedKeys(c.ParamShapes())
}

// TargetShape returns the [in, out] shape of a LoRA target projection
// (one of LoRATargets).
func (c Config) TargetShape(target string) (in, out int, ok bool) {
	d := c.NEmbd
	switch target {
	case "attn.c_attn":
		return d, 3 * d, true
	case "attn.c_proj":
		return d, d, true
	case "mlp.c_fc":
		return d, 4 * d, true
	case "mlp.c_proj":
		return 4 * d, d, true
	}
	return 0, 0, false
}

// AdapterShapes lists the tensors of a full LoRA adapter of the given rank:
// "h.N.<target>.lora_A" [in, r] and "h.N.<target>.lora_B" [r, out] for every layer
// and every target in LoRATargets.
func (c Config) AdapterShapes(rank int) map[string][]int {
	m := map[string][]int{}
	for l := 0; l < c.NLayer; l++ {
		for _, t := range LoRATargets {
			in, out, _ := c.TargetShape(t)
			p := "h." + strconv.Itoa(l) + "." + t
			m[p+".lora_A"] = []int{in, rank}
			m[p+".lora_B"] = []int{rank, out}
		}
	}
	return m
}

// Validate checks that the weights hold exactly the tensors of their config, with the
// right shapes, consistent data lengths and finite values. Errors name the tensor.
func (w *Weights) Validate() error {
	if w == nil {
		return fmt.Errorf("weights: nil")
	}
	if err := w.Config.Validate(); err != nil {
		return err
	}
	return wioCheckTensorSet(w.Tensors, w.Config.ParamShapes(), true)
}

var wioAdapterNameRE = regexp.MustCompile(`^h\.(0|[1-9][0-9]*)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.lora_(A|B)$`)

// Validate checks the adapter against a model config: see (*Adapter).ValidateShape,
// plus every layer index < n_layer and every A/B shape matching the target
// projection ([in, r] and [r, out]).
func (a *Adapter) Validate(cfg Config) error {
	if err := a.ValidateShape(); err != nil {
		return err
	}
	want := map[string][]int{}
	for _, name := range wioSortedKeys(a.Tensors) {
		m := wioAdapterNameRE.FindStringSubmatch(name)
		layer, _ := strconv.Atoi(m[1])
		if layer >= cfg.NLayer {
			return fmt.Errorf("adapter: tensor %s: layer %d out of range, model has n_layer %d", name, layer, cfg.NLayer)
		}
		in, out, _ := cfg.TargetShape(m[2])
		prefix := name[:len(name)-len(".lora_A")]
		want[prefix+".lora_A"] = []int{in, a.Rank}
		want[prefix+".lora_B"] = []int{a.Rank, out}
	}
	if err := wioCheckTensorSet(a.Tensors, want, false); err != nil {
		return fmt.Errorf("adapter: %w", err)
	}
	return nil
}

// ValidateShape checks an adapter without a model config: rank > 0, alpha finite and
// > 0, at least one tensor, every tensor named "h.N.<target>.lora_A|lora_B" with
// target in LoRATargets, A and B present in pairs with shapes [in, rank] and
// [rank, out], data lengths matching shapes, finite values. An adapter may cover a
// subset of the layers and targets.
func (a *Adapter) ValidateShape() error {
	if a == nil {
		return fmt.Errorf("adapter: nil")
	}
	if a.Rank <= 0 {
		return fmt.Errorf("adapter: rank must be > 0, got %d", a.Rank)
	}
	if !(a.Alpha > 0) || math.IsInf(a.Alpha, 0) {
		return fmt.Errorf("adapter: alpha must be finite and > 0, got %g", a.Alpha)
	}
	if len(a.Tensors) == 0 {
		return fmt.Errorf("adapter: no tensors")
	}
	for _, name := range wioSortedKeys(a.Tensors) {
		m := wioAdapterNameRE.FindStringSubmatch(name)
		if m == nil {
			return fmt.Errorf("adapter: unexpected tensor %s (want h.N.<target>.lora_A|lora_B with target in %v)", name, LoRATargets)
		}
		t := a.Tensors[name]
		if t == nil || len(t.Shape) != 2 {
			return fmt.Errorf("adapter: tensor %s must be 2-D", name)
		}
		prefix := name[:len(name)-len(".lora_A")]
		other := prefix + ".lora_B"
		if m[3] == "B" {
			other = prefix + ".lora_A"
		}
		if _, ok := a.Tensors[other]; !ok {
			return fmt.Errorf("adapter: tensor %s is missing (%s is present)", other, name)
		}
		if m[3] == "A" && t.Shape[1] != a.Rank {
			return fmt.Errorf("adapter: tensor %s has shape %v, want [%d %d] (rank %d)", name, t.Shape, t.Shape[0], a.Rank, a.Rank)
		}
		if m[3] == "B" && t.Shape[0] != a.Rank {
			return fmt.Errorf("adapter: tensor %s has shape %v, want [%d %d] (rank %d)", name, t.Shape, a.Rank, t.Shape[1], a.Rank)
		}
	}
	if err := wioCheckTensorSet(a.Tensors, wioShapesOf(a.Tensors), false); err != nil {
		return fmt.Errorf("adapter: %w", err)
	}
	return nil
}

func wioShapesOf(ts map[string]*Tensor) map[string][]int {
	m := make(map[string][]int, len(ts))
	for k, t := range ts {
		m[k] = t.Shape
	}
	return m
}

// wioCheckTensorSet checks that got has every tensor of want with the right shape and
// finite values; with exact, tensors not in want are errors too.
func wioCheckTensorSet(got map[string]*Tensor, want map[string][]int, exact bool) error {
	for _, name := range wioSortedKeys(want) {
		t, ok := got[name]
		if !ok || t == nil {
			return fmt.Errorf("tensor %s is missing (want shape %v)", name, want[name])
		}
		if !slices.Equal(t.Shape, want[name]) {
			return fmt.Errorf("tensor %s has shape %v, want %v", name, t.Shape, want[name])
		}
		if len(t.Data) != wioNumel(t.Shape) {
			return fmt.Errorf("tensor %s has %d values for shape %v", name, len(t.Data), t.Shape)
		}
		for i, v := range t.Data {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("tensor %s has non-finite value %g at index %d", name, v, i)
			}
		}
	}
	if exact {
		for _, name := range wioSortedKeys(got) {
			if _, ok := want[name]; !ok {
				return fmt.Errorf("unexpected tensor %s", name)
			}
		}
	}
	return nil
}

func wioNumel(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

func wioSortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// wioConfigPath and wioWeightsPath are the two files of a model directory.
func wioConfigPath(dir string) string  { return filepath.Join(dir, ConfigFileName) }
func wioWeightsPath(dir string) string { return filepath.Join(dir, WeightsFileName) }
