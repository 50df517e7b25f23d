package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Hugging Face PEFT's LoRA layout, so that an engine that loads PEFT adapters (PEFT itself,
// vLLM's --lora-modules and /v1/load_lora_adapter, bpo serve) can serve the ensemble:
//
//   - adapter_config.json: peft_type LORA, r, lora_alpha (PEFT's scale is lora_alpha/r),
//     target_modules, fan_in_fan_out (true: GPT-2's projections are Conv1D, weight [in, out]);
//   - adapter_model.safetensors: for each adapted projection, under the module path of
//     GPT2LMHeadModel wrapped by PeftModel/LoraModel,
//     "base_model.model.transformer.h.N.<target>.lora_A.weight" [r, in] (nn.Linear(in, r)) and
//     "...lora_B.weight" [out, r] (nn.Linear(r, out)). PEFT adds scale·B(A(x)) to the Conv1D's
//     output, so the dense delta in our [in, out] layout is scale·lora_Aᵀ·lora_Bᵀ = scale·A·B with
//     our A = lora_Aᵀ and B = lora_Bᵀ.

// File names of a PEFT adapter folder.
const (
	PEFTConfigFileName  = "adapter_config.json"
	PEFTWeightsFileName = "adapter_model.safetensors"
)

// peftKeyPrefix is what PeftModelForCausalLM's state dict puts before GPT2LMHeadModel's module
// path ("transformer.h.N...").
const peftKeyPrefix = "base_model.model."

// PEFTTensorName maps an adapter tensor "h.N.<target>.lora_A|lora_B" to its key in
// adapter_model.safetensors.
func PEFTTensorName(name string) string {
	return peftKeyPrefix + "transformer." + name + ".weight"
}

// peftModuleNames are the names target_modules uses for our LoRATargets: HF GPT-2's module
// names. attn.c_proj and mlp.c_proj share "c_proj" (PEFT matches target_modules against the end
// of a module's path), so an adapter on only one of them names it qualified.
var peftModuleNames = map[string]string{
	"attn.c_attn": "c_attn", "attn.c_proj": "c_proj", "mlp.c_fc": "c_fc", "mlp.c_proj": "c_proj",
}

// PEFTConfig is adapter_config.json as SavePEFT writes it (the keys of PEFT's LoraConfig that
// matter for loading, sorted as PEFT sorts them); LoadPEFT reads more of PEFT's keys to refuse
// settings it cannot honour.
type PEFTConfig struct {
	AlphaPattern        map[string]float64 `json:"alpha_pattern"`
	AutoMapping         any                `json:"auto_mapping"`
	BaseModelNameOrPath string             `json:"base_model_name_or_path"`
	Bias                string             `json:"bias"`
	FanInFanOut         bool               `json:"fan_in_fan_out"`
	InferenceMode       bool               `json:"inference_mode"`
	InitLoraWeights     bool               `json:"init_lora_weights"`
	LayersPattern       any                `json:"layers_pattern"`
	LayersToTransform   any                `json:"layers_to_transform"` // int or list; the keys present decide
	LoraAlpha           float64            `json:"lora_alpha"`
	LoraDropout         float64            `json:"lora_dropout"`
	ModulesToSave       []string           `json:"modules_to_save"`
	PeftType            string             `json:"peft_type"`
	R                   int                `json:"r"`
	RankPattern         map[string]int     `json:"rank_pattern"`
	Revision            *string            `json:"revision"`
	TargetModules       any                `json:"target_modules"` // list or regex; the keys present decide
	TaskType            string             `json:"task_type"`
	UseDora             bool               `json:"use_dora"`
	UseRSLoRA           bool               `json:"use_rslora"`
}

// EnsembleAdapter returns one LoRA adapter whose delta on every target equals the mean of the
// members' deltas, (1/N)·Σ_m (alpha_m/r_m)·A_m·B_m: exactly what MergeMean adds to the base.
// Its rank is R = Σ r_m: A stacks the members' A columns side by side ([in, R]), B their B rows
// one under the other ([R, out]), so A·B = Σ_m A_m·B_m blockwise. Its alpha is
// alpha_0·R/(r_0·N), so that its scale alpha/R is member 0's scale over N; a member of another
// rank or alpha has its B multiplied by the ratio of its scale over N to that scale. For an ensemble of one rank r and alpha (what the trainer builds)
// that ratio is 1, alpha stays alpha (alpha/(N·r) = (alpha/r)/N), and A and B are the members'
// values bit for bit. A member without a target contributes a zero block there. Members are not
// modified.
func EnsembleAdapter(members []*Adapter) (*Adapter, error) {
	if len(members) == 0 {
		return nil, errors.New("ensemble adapter: no members")
	}
	R := 0
	prefixes := map[string][2]int{} // prefix -> [in, out]
	for m, a := range members {
		if err := a.ValidateShape(); err != nil {
			return nil, fmt.Errorf("ensemble adapter: member %d: %w", m, err)
		}
		R += a.Rank
		for _, name := range wioSortedKeys(a.Tensors) {
			t := a.Tensors[name]
			prefix, ok := strings.CutSuffix(name, ".lora_A")
			if !ok {
				continue
			}
			dims := [2]int{t.Shape[0], a.Tensors[prefix+".lora_B"].Shape[1]}
			if prev, seen := prefixes[prefix]; seen && prev != dims {
				return nil, fmt.Errorf("ensemble adapter: member %d: %s is [%d, %d], an earlier member has [%d, %d]",
					m, prefix, dims[0], dims[1], prev[0], prev[1])
			}
			prefixes[prefix] = dims
		}
	}
	N := float64(len(members))
	m0 := members[0]
	// R/(r0·N) is exactly 1 for a homogeneous ensemble, so alpha is then m0.Alpha bit for bit.
	out := &Adapter{Rank: R, Alpha: m0.Alpha * (float64(R) / (float64(m0.Rank) * N)), Tensors: map[string]*Tensor{}}
	for prefix, dims := range prefixes {
		in, o := dims[0], dims[1]
		A, B := NewTensor(in, R), NewTensor(R, o)
		off := 0
		for _, a := range members {
			r := a.Rank
			mA, mB := a.Tensors[prefix+".lora_A"], a.Tensors[prefix+".lora_B"]
			if mA != nil {
				f := 1.0 // a member with m0's rank and alpha needs no rescaling (and gets none: exact)
				if a.Rank != m0.Rank || a.Alpha != m0.Alpha {
					f = (a.Scale() / N) / out.Scale()
				}
				for i := 0; i < in; i++ {
					copy(A.Data[i*R+off:i*R+off+r], mA.Data[i*r:(i+1)*r])
				}
				for k := 0; k < r; k++ {
					row := B.Data[(off+k)*o : (off+k+1)*o]
					for j, v := range mB.Data[k*o : (k+1)*o] {
						row[j] = f * v
					}
				}
			}
			off += r
		}
		out.Tensors[prefix+".lora_A"], out.Tensors[prefix+".lora_B"] = A, B
	}
	return out, nil
}

// PEFTTargetModules is target_modules for an adapter: HF GPT-2's module names of the targets it
// carries, sorted ("c_proj" when it carries both attn.c_proj and mlp.c_proj, else the qualified
// name of the one it carries).
func PEFTTargetModules(a *Adapter) []string {
	has := map[string]bool{}
	for name := range a.Tensors {
		if m := wioAdapterNameRE.FindStringSubmatch(name); m != nil {
			has[m[2]] = true
		}
	}
	var mods []string
	for _, t := range LoRATargets {
		if !has[t] {
			continue
		}
		name := peftModuleNames[t]
		if name == "c_proj" && !(has["attn.c_proj"] && has["mlp.c_proj"]) {
			name = t
		}
		if !slices.Contains(mods, name) {
			mods = append(mods, name)
		}
	}
	slices.Sort(mods)
	return mods
}

// SavePEFT writes a as a PEFT LoRA adapter folder: dir/adapter_model.safetensors (F32, keys
// PEFTTensorName, __metadata__ {"format": "pt"}) and then dir/adapter_config.json, each
// atomically; dir is created if needed. baseModel is base_model_name_or_path (the base model's
// folder or hub name; informative). a is checked against cfg first. Projections that a does not
// carry but target_modules names (a layer a skips) load in PEFT as zero deltas (lora_B starts at
// zero), so the loaded adapter is exact.
func SavePEFT(dir string, a *Adapter, cfg Config, baseModel string) error {
	if err := a.Validate(cfg); err != nil {
		return fmt.Errorf("save PEFT adapter to %s: %w", dir, err)
	}
	c := PEFTConfig{
		AlphaPattern:        map[string]float64{},
		BaseModelNameOrPath: baseModel,
		Bias:                "none",
		FanInFanOut:         true,
		InferenceMode:       true,
		InitLoraWeights:     true,
		LoraAlpha:           a.Alpha,
		PeftType:            "LORA",
		R:                   a.Rank,
		RankPattern:         map[string]int{},
		TargetModules:       PEFTTargetModules(a),
		TaskType:            "CAUSAL_LM",
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	ts := make(map[string]*Tensor, len(a.Tensors))
	for name, t := range a.Tensors {
		ts[PEFTTensorName(name)] = peftTranspose(t)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := SaveTensors(filepath.Join(dir, PEFTWeightsFileName), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, PEFTConfigFileName), append(b, '\n'))
}

// LoadPEFT reads a PEFT LoRA adapter folder (adapter_config.json and adapter_model.safetensors)
// for a GPT-2 of config cfg, as written by SavePEFT or by PEFT's save_pretrained. Keys may carry
// or omit "base_model.model." and "transformer."; every key must be a lora_A or lora_B weight of
// one of LoRATargets. use_rslora (scale lora_alpha/√r) is honoured by setting Alpha so that
// Alpha/Rank is PEFT's scale. Settings that change the computation in ways an Adapter cannot hold
// (DoRA, per-module rank or alpha patterns, modules_to_save, trained biases) are errors naming
// the key. Errors name the file.
func LoadPEFT(dir string, cfg Config) (*Adapter, error) {
	cpath := filepath.Join(dir, PEFTConfigFileName)
	raw, err := os.ReadFile(cpath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: not a PEFT adapter folder (no %s): %w", dir, PEFTConfigFileName, err)
		}
		return nil, err
	}
	var c PEFTConfig
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", cpath, err)
	}
	scale, err := c.scale()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cpath, err)
	}
	wpath := filepath.Join(dir, PEFTWeightsFileName)
	if _, err := os.Stat(wpath); errors.Is(err, fs.ErrNotExist) {
		if _, binErr := os.Stat(filepath.Join(dir, "adapter_model.bin")); binErr == nil {
			return nil, fmt.Errorf("%s: only %s is read, not the pickled adapter_model.bin: convert it with safetensors", dir, PEFTWeightsFileName)
		}
	}
	raws, _, err := LoadTensors(wpath)
	if err != nil {
		return nil, err
	}
	a := &Adapter{Rank: c.R, Alpha: scale * float64(c.R), Tensors: make(map[string]*Tensor, len(raws))}
	for _, key := range wioSortedKeys(raws) {
		t := raws[key]
		name, ok := peftInternalName(key)
		if !ok {
			return nil, fmt.Errorf("%s: unexpected tensor %s (want base_model.model.transformer.h.N.<module>.lora_A|lora_B.weight with module one of %v)", wpath, key, LoRATargets)
		}
		if _, dup := a.Tensors[name]; dup {
			return nil, fmt.Errorf("%s: tensor %s appears twice (with and without a prefix)", wpath, key)
		}
		if len(t.Shape) != 2 {
			return nil, fmt.Errorf("%s: tensor %s has shape %v, want 2-D", wpath, key, t.Shape)
		}
		a.Tensors[name] = peftTranspose(t)
	}
	if err := a.Validate(cfg); err != nil {
		return nil, fmt.Errorf("%s: %w (r is %d in %s)", wpath, err, c.R, PEFTConfigFileName)
	}
	return a, nil
}

// scale is PEFT's scaling of the LoRA branch for c, or an error naming the setting it cannot
// honour.
func (c PEFTConfig) scale() (float64, error) {
	switch {
	case c.PeftType != "LORA":
		return 0, fmt.Errorf("peft_type %q is not supported, want \"LORA\"", c.PeftType)
	case c.R <= 0:
		return 0, fmt.Errorf("r must be > 0, got %d", c.R)
	case !(c.LoraAlpha > 0) || math.IsInf(c.LoraAlpha, 0):
		return 0, fmt.Errorf("lora_alpha must be finite and > 0, got %g", c.LoraAlpha)
	case c.UseDora:
		return 0, errors.New("use_dora true is not supported (DoRA rescales the merged weight)")
	case len(c.RankPattern) > 0:
		return 0, errors.New("rank_pattern is not supported (one rank for every module): merge it or save with one r")
	case len(c.AlphaPattern) > 0:
		return 0, errors.New("alpha_pattern is not supported (one lora_alpha for every module)")
	case len(c.ModulesToSave) > 0:
		return 0, fmt.Errorf("modules_to_save %v is not supported (only LoRA deltas are applied)", c.ModulesToSave)
	case c.Bias != "" && c.Bias != "none":
		return 0, fmt.Errorf("bias %q is not supported, want \"none\"", c.Bias)
	}
	if c.UseRSLoRA {
		return c.LoraAlpha / math.Sqrt(float64(c.R)), nil
	}
	return c.LoraAlpha / float64(c.R), nil
}

// peftInternalName maps a PEFT key to "h.N.<target>.lora_A|lora_B".
func peftInternalName(key string) (string, bool) {
	name := strings.TrimPrefix(key, peftKeyPrefix)
	name = strings.TrimPrefix(name, "transformer.")
	name, ok := strings.CutSuffix(name, ".weight")
	if !ok || !wioAdapterNameRE.MatchString(name) {
		return "", false
	}
	return name, true
}

// peftTranspose returns the transpose of a 2-D tensor (our [in, r] / [r, out] to PEFT's
// nn.Linear [r, in] / [out, r], and back).
func peftTranspose(t *Tensor) *Tensor {
	r, c := t.Shape[0], t.Shape[1]
	out := NewTensor(c, r)
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			out.Data[j*r+i] = t.Data[i*c+j]
		}
	}
	return out
}
