package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nlpodyssey/safetensors"
	"github.com/x448/float16"
)

// mtConfig is a small byte-level GPT-2 config for tests.
func mtConfig(vocab, nPos, d, nLayer, nHead int) Config {
	return Config{
		ModelType: "gpt2", VocabSize: vocab, NPositions: nPos, NEmbd: d, NLayer: nLayer, NHead: nHead,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: vocab - 1, EOSTokenID: vocab - 1,
	}
}

// mtRandomWeights are weights with N(0, std²) entries everywhere (LayerNorm gains
// around 1), so that every path of the network matters numerically.
func mtRandomWeights(cfg Config, seed uint64, std float64) *Weights {
	r := rand.New(rand.NewPCG(seed, 99))
	w := &Weights{Config: cfg, Tensors: map[string]*Tensor{}}
	for _, name := range cfg.ParamNames() {
		t := NewTensor(cfg.ParamShapes()[name]...)
		for i := range t.Data {
			t.Data[i] = std * r.NormFloat64()
			if strings.Contains(name, "ln_") && strings.HasSuffix(name, ".weight") {
				t.Data[i] += 1
			}
		}
		w.Tensors[name] = t
	}
	return w
}

// mtRound32 rounds every value to float32 precision, in place.
func mtRound32(ts map[string]*Tensor) {
	for _, t := range ts {
		for i, v := range t.Data {
			t.Data[i] = float64(float32(v))
		}
	}
}

func mtEqualTensors(t *testing.T, got, want map[string]*Tensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d tensors, want %d", len(got), len(want))
	}
	for name, w := range want {
		g := got[name]
		if g == nil {
			t.Fatalf("tensor %s missing", name)
		}
		if !slices.Equal(g.Shape, w.Shape) {
			t.Fatalf("tensor %s: shape %v, want %v", name, g.Shape, w.Shape)
		}
		for i := range w.Data {
			if math.Float64bits(g.Data[i]) != math.Float64bits(w.Data[i]) {
				t.Fatalf("tensor %s[%d] = %v, want %v", name, i, g.Data[i], w.Data[i])
			}
		}
	}
}

func TestSaveLoadWeightsRoundTrip(t *testing.T) {
	cfg := mtConfig(37, 16, 8, 2, 2)
	w := mtRandomWeights(cfg, 1, 0.5)
	mtRound32(w.Tensors)
	dir := filepath.Join(t.TempDir(), "model")
	if err := SaveWeights(dir, w); err != nil {
		t.Fatal(err)
	}
	got, err := LoadWeights(dir)
	if err != nil {
		t.Fatal(err)
	}
	mtEqualTensors(t, got.Tensors, w.Tensors)
	want := cfg
	want.Architectures = []string{"GPT2LMHeadModel"}
	if b1, b2 := mtJSON(got.Config), mtJSON(want); b1 != b2 {
		t.Fatalf("config round trip:\n got %s\nwant %s", b1, b2)
	}
	// Saving again gives byte-identical files.
	dir2 := filepath.Join(t.TempDir(), "model2")
	if err := SaveWeights(dir2, got); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ConfigFileName, WeightsFileName} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, _ := os.ReadFile(filepath.Join(dir2, f))
		if string(a) != string(b) {
			t.Fatalf("%s differs after save→load→save", f)
		}
	}
	// The config carries the usual Hugging Face keys.
	var raw map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, ConfigFileName))
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"model_type": "gpt2", "activation_function": "gelu_new", "n_ctx": 16.0, "n_positions": 16.0, "n_embd": 8.0, "tie_word_embeddings": true} {
		if raw[k] != v {
			t.Errorf("config.json %s = %v, want %v", k, raw[k], v)
		}
	}
	if a, ok := raw["architectures"].([]any); !ok || len(a) != 1 || a[0] != "GPT2LMHeadModel" {
		t.Errorf("config.json architectures = %v", raw["architectures"])
	}
	// Header: F32, sorted keys, format pt.
	st, meta, err := wioReadSafetensors(filepath.Join(dir, WeightsFileName))
	if err != nil {
		t.Fatal(err)
	}
	if meta["format"] != "pt" {
		t.Errorf("__metadata__ = %v, want format pt", meta)
	}
	names := st.Names()
	for i, nv := range st.Tensors() {
		if nv.TensorView.DType() != safetensors.F32 {
			t.Errorf("%s has dtype %v", nv.Name, nv.TensorView.DType())
		}
		if i > 0 && names[i-1] > names[i] {
			t.Errorf("data not in sorted name order: %s before %s", names[i-1], names[i])
		}
	}
}

func mtJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestSaveTensorsF64RoundTrip(t *testing.T) {
	ts := map[string]*Tensor{
		"step":    {Shape: []int{}, Data: []float64{42}},
		"empty":   NewTensor(0, 3),
		"m.h.0.x": {Shape: []int{2, 3}, Data: []float64{1e-300, -2.5, math.Pi, 1e300, 0, math.SmallestNonzeroFloat64}},
		"v.wte":   {Shape: []int{4}, Data: []float64{1, 2, 3, 4}},
	}
	path := filepath.Join(t.TempDir(), "optimizer.safetensors")
	meta := map[string]string{"step": "7", "kind": "adamw"}
	if err := SaveTensorsF64(path, ts, meta); err != nil {
		t.Fatal(err)
	}
	got, gotMeta, err := LoadTensors(path)
	if err != nil {
		t.Fatal(err)
	}
	mtEqualTensors(t, got, ts)
	if mtJSON(gotMeta) != mtJSON(meta) {
		t.Fatalf("metadata %v, want %v", gotMeta, meta)
	}
	// F32 rejects values that do not fit.
	err = SaveTensors(filepath.Join(t.TempDir(), "x.safetensors"), ts, nil)
	if err == nil || !strings.Contains(err.Error(), "m.h.0.x") || !strings.Contains(err.Error(), "overflows F32") {
		t.Fatalf("F32 overflow error = %v", err)
	}
	// Data that does not match the shape is refused.
	err = SaveTensors(filepath.Join(t.TempDir(), "y.safetensors"), map[string]*Tensor{"bad": {Shape: []int{2, 2}, Data: []float64{1}}}, nil)
	if err == nil || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("shape mismatch error = %v", err)
	}
}

// mtRawView is a raw library view for hand-built files.
func mtRawFile(t *testing.T, path string, views map[string]safetensors.TensorView, meta map[string]string) {
	t.Helper()
	b, err := safetensors.Serialize(views, meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadTensorsHalfPrecision(t *testing.T) {
	f16 := []uint16{0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x3555, 0x0000, 0x8000}
	want16 := []float64{1, -2, 65504, math.Ldexp(1, -24), math.Inf(1), 0.333251953125, 0, 0}
	bf16 := []uint16{0x3F80, 0xC0A0, 0x3EAB}
	wantBF := []float64{1, -5, float64(math.Float32frombits(0x3EAB0000))}
	enc := func(v []uint16) []byte {
		b := make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(b[2*i:], x)
		}
		return b
	}
	v16, err := safetensors.NewTensorView(safetensors.F16, []uint64{uint64(len(f16))}, enc(f16))
	if err != nil {
		t.Fatal(err)
	}
	vbf, err := safetensors.NewTensorView(safetensors.BF16, []uint64{uint64(len(bf16))}, enc(bf16))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "half.safetensors")
	mtRawFile(t, path, map[string]safetensors.TensorView{"a": v16, "b": vbf}, nil)
	got, _, err := LoadTensors(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want16 {
		if got["a"].Data[i] != w {
			t.Errorf("F16 %#04x = %v, want %v", f16[i], got["a"].Data[i], w)
		}
	}
	for i, w := range wantBF {
		if got["b"].Data[i] != w {
			t.Errorf("BF16 %#04x = %v, want %v", bf16[i], got["b"].Data[i], w)
		}
	}
	if math.Signbit(got["a"].Data[7]) != true {
		t.Errorf("F16 -0 lost its sign")
	}
	// Integer tensors are refused, naming the tensor.
	vi, _ := safetensors.NewTensorView(safetensors.I64, []uint64{1}, make([]byte, 8))
	mtRawFile(t, path, map[string]safetensors.TensorView{"ids": vi}, nil)
	if _, _, err := LoadTensors(path); err == nil || !strings.Contains(err.Error(), "ids") || !strings.Contains(err.Error(), "half.safetensors") {
		t.Fatalf("I64 error = %v", err)
	}
}

// TestSaveTensorsF16 checks the binary16 writer against hand-computed IEEE encodings (round to
// nearest, ties to even, subnormals, the largest finite half, signed zero), that the file reads
// back to exactly those values, and that a value rounding past 65504 is refused before any file
// is written.
func TestSaveTensorsF16(t *testing.T) {
	cases := []struct {
		x    float64
		bits uint16
	}{
		{1, 0x3C00},
		{-2, 0xC000},
		{65504, 0x7BFF},
		{65519, 0x7BFF},                    // below the midpoint to 2^16: rounds down
		{math.Ldexp(1, -24), 0x0001},       // smallest subnormal
		{math.Ldexp(1, -25), 0x0000},       // tie between 0 and 2^-24: to even (0)
		{1 + math.Ldexp(1, -11), 0x3C00},   // tie: to even (1.0)
		{1 + 3*math.Ldexp(1, -11), 0x3C02}, // tie: to even (1 + 2^-9)
		{1.0 / 3, 0x3555},
		{math.Copysign(0, -1), 0x8000},
		{math.Inf(1), 0x7C00},
	}
	x := NewTensor(len(cases))
	for i, c := range cases {
		x.Data[i] = c.x
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	if err := SaveTensorsF16(path, map[string]*Tensor{"w": x}, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	header := binary.LittleEndian.Uint64(raw)
	if !strings.Contains(string(raw[8:8+header]), `"dtype":"F16"`) {
		t.Fatalf("header %s", raw[8:8+header])
	}
	data := raw[8+header:]
	if len(data) != 2*len(cases) {
		t.Fatalf("%d data bytes, want %d", len(data), 2*len(cases))
	}
	got, _, err := LoadTensors(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		if b := binary.LittleEndian.Uint16(data[2*i:]); b != c.bits {
			t.Errorf("%v: bits %#04x, want %#04x", c.x, b, c.bits)
		}
		want := float64(float16.Frombits(c.bits).Float32())
		if g := got["w"].Data[i]; g != want || math.Signbit(g) != math.Signbit(want) {
			t.Errorf("%v: read back %v, want %v", c.x, g, want)
		}
	}
	for _, bad := range []float64{65520, -1e6, 1e39} {
		over := filepath.Join(dir, "over.safetensors")
		err := SaveTensorsF16(over, map[string]*Tensor{"w": {Shape: []int{1}, Data: []float64{bad}}}, nil)
		if err == nil || !strings.Contains(err.Error(), "overflows F16") || !strings.Contains(err.Error(), "tensor w") {
			t.Errorf("%v: error %v, want an F16 overflow naming the tensor", bad, err)
		}
		if _, statErr := os.Stat(over); !os.IsNotExist(statErr) {
			t.Errorf("%v: a file was written despite the error", bad)
		}
	}
	var buf bytes.Buffer
	if err := EncodeTensors(&buf, map[string]*Tensor{"w": x}, nil, "F16"); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(buf.Bytes(), data) {
		t.Errorf("EncodeTensors F16 differs from SaveTensorsF16")
	}
}

// TestSaveWeightsF16: a model folder written in F16 loads back as the binary16 rounding of every
// weight (round to nearest even, then exact widening), with torch_dtype float16 in config.json and
// the same config otherwise, at half the F32 file's data bytes.
func TestSaveWeightsF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	w := grRandomWeights(rng, grTinyConfig())
	dir16, dir32 := t.TempDir(), t.TempDir()
	if err := SaveWeightsF16(dir16, w); err != nil {
		t.Fatal(err)
	}
	if err := SaveWeights(dir32, w); err != nil {
		t.Fatal(err)
	}
	got, err := LoadWeights(dir16)
	if err != nil {
		t.Fatal(err)
	}
	got32, err := LoadWeights(dir32)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Config, got32.Config) {
		t.Fatalf("config %+v, want the F32 folder's %+v", got.Config, got32.Config)
	}
	for name, x := range w.Tensors {
		g := got.Tensors[name]
		if g == nil || !slices.Equal(g.Shape, x.Shape) {
			t.Fatalf("%s: missing or reshaped", name)
		}
		for i, v := range x.Data {
			want := float64(float16.Fromfloat32(float32(v)).Float32())
			if g.Data[i] != want {
				t.Fatalf("%s[%d] = %v read back as %v, want %v", name, i, v, g.Data[i], want)
			}
		}
	}
	for dir, dtype := range map[string]string{dir16: "float16", dir32: "float32"} {
		var cfg struct {
			TorchDtype string `json:"torch_dtype"`
		}
		b, err := os.ReadFile(filepath.Join(dir, ConfigFileName))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &cfg); err != nil || cfg.TorchDtype != dtype {
			t.Errorf("%s: torch_dtype %q (%v), want %q", dir, cfg.TorchDtype, err, dtype)
		}
	}
	dataBytes := func(dir string) int {
		raw, err := os.ReadFile(filepath.Join(dir, WeightsFileName))
		if err != nil {
			t.Fatal(err)
		}
		return len(raw) - 8 - int(binary.LittleEndian.Uint64(raw))
	}
	if d16, d32 := dataBytes(dir16), dataBytes(dir32); 2*d16 != d32 {
		t.Errorf("F16 data %d B, F32 %d B: want half", d16, d32)
	}
}

// mtHFDir writes a model directory the way transformers' save_pretrained of a
// GPT2LMHeadModel may: "transformer." prefix, lm_head.weight, attention buffers.
func mtHFDir(t *testing.T, w *Weights, dt safetensors.DType) string {
	t.Helper()
	dir := t.TempDir()
	views := map[string]safetensors.TensorView{}
	add := func(name string, t32 *Tensor) {
		shape := make([]uint64, len(t32.Shape))
		for i, s := range t32.Shape {
			shape[i] = uint64(s)
		}
		v, err := safetensors.NewTensorView(dt, shape, wioView{dt: dt, shape: shape, t: t32}.Data())
		if err != nil {
			t.Fatal(err)
		}
		views[name] = v
	}
	for name, ten := range w.Tensors {
		add("transformer."+name, ten)
	}
	add("lm_head.weight", w.Tensors["wte.weight"])
	P := w.Config.NPositions
	for l := 0; l < w.Config.NLayer; l++ {
		mask := NewTensor(1, 1, P, P)
		add("transformer.h."+string(rune('0'+l))+".attn.bias", mask)
		add("transformer.h."+string(rune('0'+l))+".attn.masked_bias", &Tensor{Shape: []int{1}, Data: []float64{-1e4}})
	}
	mtRawFile(t, filepath.Join(dir, WeightsFileName), views, map[string]string{"format": "pt"})
	cfgJSON := `{
  "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
  "bos_token_id": 36, "embd_pdrop": 0.1, "eos_token_id": 36, "initializer_range": 0.02,
  "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 16, "n_embd": 8, "n_head": 2,
  "n_inner": null, "n_layer": 2, "n_positions": 16, "reorder_and_upcast_attn": false,
  "resid_pdrop": 0.1, "scale_attn_by_inverse_layer_idx": false, "scale_attn_weights": true,
  "summary_activation": null, "summary_first_dropout": 0.1, "summary_proj_to_labels": true,
  "summary_type": "cls_index", "summary_use_proj": true, "torch_dtype": "float32",
  "transformers_version": "4.44.0", "use_cache": true, "vocab_size": 37
}`
	if err := os.WriteFile(filepath.Join(dir, ConfigFileName), []byte(cfgJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadWeightsHuggingFaceLayout(t *testing.T) {
	cfg := mtConfig(37, 16, 8, 2, 2)
	w := mtRandomWeights(cfg, 2, 0.5)
	mtRound32(w.Tensors)
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.F64} {
		got, err := LoadWeights(mtHFDir(t, w, dt))
		if err != nil {
			t.Fatalf("%v: %v", dt, err)
		}
		mtEqualTensors(t, got.Tensors, w.Tensors)
		if got.Config.NEmbd != 8 || got.Config.EOSTokenID != 36 || got.Config.LayerNormEpsilon != 1e-5 {
			t.Fatalf("config %+v", got.Config)
		}
	}
}

// mtSaveRaw writes config.json and a model.safetensors holding the given tensors.
func mtSaveRaw(t *testing.T, cfg Config, ts map[string]*Tensor) string {
	t.Helper()
	dir := t.TempDir()
	if err := WriteConfig(filepath.Join(dir, ConfigFileName), cfg); err != nil {
		t.Fatal(err)
	}
	if err := SaveTensors(filepath.Join(dir, WeightsFileName), ts, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadWeightsShapeErrorsNameTensor(t *testing.T) {
	cfg := mtConfig(11, 8, 64, 2, 4)
	w := Init(cfg, 1)
	w.Tensors["h.1.mlp.c_fc.weight"] = NewTensor(64, 128)
	dir := mtSaveRaw(t, cfg, w.Tensors)
	_, err := LoadWeights(dir)
	want := filepath.Join(dir, WeightsFileName) + ": tensor h.1.mlp.c_fc.weight has shape [64 128], want [64 256]"
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant %s", err, want)
	}

	w = Init(cfg, 1)
	delete(w.Tensors, "h.0.ln_2.bias")
	_, err = LoadWeights(mtSaveRaw(t, cfg, w.Tensors))
	if err == nil || !strings.Contains(err.Error(), "model.safetensors: tensor h.0.ln_2.bias is missing") {
		t.Fatalf("missing tensor error = %v", err)
	}

	w = Init(cfg, 1)
	w.Tensors["h.2.ln_1.weight"] = NewTensor(64)
	_, err = LoadWeights(mtSaveRaw(t, cfg, w.Tensors))
	if err == nil || !strings.Contains(err.Error(), "model.safetensors: unexpected tensor h.2.ln_1.weight") {
		t.Fatalf("unexpected tensor error = %v", err)
	}

	w = Init(cfg, 1)
	w.Tensors["wpe.weight"].Data[5] = math.NaN()
	_, err = LoadWeights(mtSaveRaw(t, cfg, w.Tensors))
	if err == nil || !strings.Contains(err.Error(), "tensor wpe.weight has non-finite value NaN at index 5") {
		t.Fatalf("NaN error = %v", err)
	}

	// A config that does not match the tensors names config.json's key or the tensor.
	dir = t.TempDir()
	if err := SaveWeights(dir, Init(cfg, 1)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, ConfigFileName))
	os.WriteFile(filepath.Join(dir, ConfigFileName), []byte(strings.Replace(string(b), `"gelu_new"`, `"relu"`, 1)), 0o644)
	_, err = LoadWeights(dir)
	if err == nil || !strings.Contains(err.Error(), "config.json: config: activation_function \"relu\"") {
		t.Fatalf("config error = %v", err)
	}
}

func TestLoadWeightsCorruptFilesFailLoudly(t *testing.T) {
	cfg := mtConfig(37, 16, 8, 2, 2)
	dir := t.TempDir()
	if err := SaveWeights(dir, Init(cfg, 3)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, WeightsFileName)
	good, _ := os.ReadFile(path)
	hlen := binary.LittleEndian.Uint64(good)
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "too short for a safetensors header"},
		{"cut in length", good[:5], "too short for a safetensors header"},
		{"cut in header", good[:8+hlen/2], "header length"},
		{"cut in data", good[:len(good)-7], "out of range"},
		{"cut after header", good[:8+hlen], "out of range"},
		{"trailing bytes", append(append([]byte(nil), good...), 1, 2, 3), "trailing bytes"},
		{"not safetensors", []byte("{\"hello\": \"world, this is json\"}"), "header length"},
	}
	// Header with a gap between tensors, and one with offsets beyond the data.
	mk := func(edit func(h map[string]map[string]any)) []byte {
		var h map[string]map[string]any
		json.Unmarshal(good[8:8+hlen], &h)
		edit(h)
		hb, _ := json.Marshal(h)
		out := binary.LittleEndian.AppendUint64(nil, uint64(len(hb)))
		out = append(out, hb...)
		return append(out, good[8+hlen:]...)
	}
	cases = append(cases,
		struct {
			name string
			data []byte
			want string
		}{"non-contiguous", mk(func(h map[string]map[string]any) {
			e := h["wte.weight"]["data_offsets"].([]any)
			e[0] = e[0].(float64) + 4
		}), "tensor wte.weight: data_offsets"},
		struct {
			name string
			data []byte
			want string
		}{"offsets beyond data", mk(func(h map[string]map[string]any) {
			e := h["wte.weight"]["data_offsets"].([]any)
			e[1] = e[1].(float64) + 1e6
		}), "tensor wte.weight: data_offsets"},
		struct {
			name string
			data []byte
			want string
		}{"bad json", append(append(append([]byte(nil), good[:8]...), '!'), good[9:]...), "not valid JSON"},
	)
	// Raw header edits a JSON map cannot express: a name given twice (the library kept the
	// last one), and a second JSON value after the object.
	raw := func(header string) []byte {
		out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
		return append(append(out, header...), good[8+hlen:]...)
	}
	header := strings.TrimRight(string(good[8:8+hlen]), " ")
	var h map[string]json.RawMessage
	json.Unmarshal([]byte(header), &h)
	dup := `{"wte.weight":` + string(h["wte.weight"]) + "," + header[1:]
	for _, c := range []struct{ name, header, want string }{
		{"duplicate name", dup, `names "wte.weight" twice`},
		{"data after the header object", header + ` {}`, "data after its JSON object"},
		{"header not an object", `[1, 2]`, "not a JSON object"},
	} {
		cases = append(cases, struct {
			name string
			data []byte
			want string
		}{c.name, raw(c.header), c.want})
	}
	for _, c := range cases {
		if err := os.WriteFile(path, c.data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadWeights(dir)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not name the file and %q", c.name, err, c.want)
		}
	}
}

func TestAdapterRoundTrip(t *testing.T) {
	cfg := mtConfig(37, 16, 8, 2, 2)
	a := NewAdapter(cfg, 3, 6, 5)
	r := rand.New(rand.NewPCG(1, 2))
	for name, ten := range a.Tensors {
		if strings.HasSuffix(name, "lora_B") {
			for i := range ten.Data {
				ten.Data[i] = r.NormFloat64()
			}
		}
	}
	mtRound32(a.Tensors)
	path := filepath.Join(t.TempDir(), "adapter.safetensors")
	if err := SaveAdapter(path, a); err != nil {
		t.Fatal(err)
	}
	got, err := LoadAdapterFor(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got.Rank != 3 || got.Alpha != 6 {
		t.Fatalf("rank %d alpha %v", got.Rank, got.Alpha)
	}
	mtEqualTensors(t, got.Tensors, a.Tensors)
	_, meta, _ := LoadTensors(path)
	if meta["rank"] != "3" || meta["alpha"] != "6" {
		t.Fatalf("metadata %v", meta)
	}
	// Against a config with another width the error names the file and the tensor.
	_, err = LoadAdapterFor(path, mtConfig(37, 16, 16, 2, 2))
	if err == nil || !strings.Contains(err.Error(), "adapter.safetensors") || !strings.Contains(err.Error(), "tensor h.0.attn.c_attn.lora_A has shape [8 3], want [16 3]") {
		t.Fatalf("config mismatch error = %v", err)
	}
	_, err = LoadAdapterFor(path, mtConfig(37, 16, 8, 1, 2))
	if err == nil || !strings.Contains(err.Error(), "layer 1 out of range") {
		t.Fatalf("layer error = %v", err)
	}
	// Missing metadata, unpaired tensors.
	if err := SaveTensors(path, a.Tensors, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAdapter(path); err == nil || !strings.Contains(err.Error(), `no "rank"`) {
		t.Fatalf("missing rank error = %v", err)
	}
	b := a.Clone()
	delete(b.Tensors, "h.1.mlp.c_fc.lora_B")
	if err := SaveTensors(path, b.Tensors, map[string]string{"rank": "3", "alpha": "6"}); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAdapter(path); err == nil || !strings.Contains(err.Error(), "tensor h.1.mlp.c_fc.lora_B is missing") {
		t.Fatalf("unpaired error = %v", err)
	}
	if err := SaveTensors(path, a.Tensors, map[string]string{"rank": "4", "alpha": "6"}); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAdapter(path); err == nil || !strings.Contains(err.Error(), "rank 4") {
		t.Fatalf("rank mismatch error = %v", err)
	}
}

func TestDecodeConfigHuggingFaceGPT2(t *testing.T) {
	// The config.json of the released "gpt2" checkpoint (abridged keys kept).
	src := `{"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
	  "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
	  "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
	  "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024,
	  "resid_pdrop": 0.1, "summary_activation": null, "summary_first_dropout": 0.1,
	  "summary_proj_to_labels": true, "summary_type": "cls_index", "summary_use_proj": true,
	  "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
	  "vocab_size": 50257}`
	cfg, err := DecodeConfig([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NEmbd != 768 || cfg.NLayer != 12 || cfg.VocabSize != 50257 || cfg.EOSTokenID != 50256 || cfg.LayerNormEpsilon != 1e-5 {
		t.Fatalf("%+v", cfg)
	}
	// Defaults apply to absent keys.
	cfg, err = DecodeConfig([]byte(`{"vocab_size": 257, "eos_token_id": 256, "bos_token_id": 256, "n_embd": 64, "n_head": 4, "n_layer": 2, "n_positions": 128}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LayerNormEpsilon != 1e-5 || cfg.ActivationFunction != "gelu_new" || cfg.ModelType != "gpt2" {
		t.Fatalf("%+v", cfg)
	}
	for src, want := range map[string]string{
		`{"model_type": "llama"}`:        "model_type",
		`{"n_inner": 100}`:               "n_inner",
		`{"tie_word_embeddings": false}`: "tie_word_embeddings",
		`{"scale_attn_weights": false}`:  "scale_attn_weights",
		`{"n_embd": 100, "n_head": 12}`:  "n_embd",
		`{"layer_norm_epsilon": 0}`:      "layer_norm_epsilon",
		`{"vocab_size": 10}`:             "eos_token_id",
		`[1, 2]`:                         "config",
	} {
		if _, err := DecodeConfig([]byte(src)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want mention of %s", src, err, want)
		}
	}
}

// mtFailingWriter passes n bytes through and then fails.
type mtFailingWriter struct {
	w io.Writer
	n int
}

var errMTDiskFull = errors.New("simulated write failure")

func (f *mtFailingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k, _ := f.w.Write(p[:f.n])
		f.n = 0
		return k, errMTDiskFull
	}
	f.n -= len(p)
	return f.w.Write(p)
}

func TestInterruptedSaveKeepsOldFile(t *testing.T) {
	cfg := mtConfig(37, 16, 8, 2, 2)
	old := Init(cfg, 1)
	dir := t.TempDir()
	if err := SaveWeights(dir, old); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, WeightsFileName))
	for _, cut := range []int{0, 5, 100, len(before) / 2, len(before) - 1} {
		atomicWriteHook = func(w io.Writer) io.Writer { return &mtFailingWriter{w: w, n: cut} }
		err := SaveWeights(dir, Init(cfg, 2))
		atomicWriteHook = nil
		if !errors.Is(err, errMTDiskFull) || !strings.Contains(err.Error(), WeightsFileName) {
			t.Fatalf("cut %d: error = %v", cut, err)
		}
		after, _ := os.ReadFile(filepath.Join(dir, WeightsFileName))
		if string(after) != string(before) {
			t.Fatalf("cut %d: old file changed", cut)
		}
		got, err := LoadWeights(dir)
		if err != nil {
			t.Fatal(err)
		}
		w32 := old.Clone()
		mtRound32(w32.Tensors)
		mtEqualTensors(t, got.Tensors, w32.Tensors)
		ents, _ := os.ReadDir(dir)
		if len(ents) != 2 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("cut %d: directory holds %v, want only config.json and model.safetensors", cut, names)
		}
	}
}

// TestKilledSaveKeepsOldFile kills a process in the middle of WriteFileAtomic (with
// part of the new content already on disk) and checks the target is untouched.
func TestKilledSaveKeepsOldFile(t *testing.T) {
	if os.Getenv("BPO_MT_KILL_HELPER") != "" {
		return
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "data.bin")
	old := []byte("the old, complete content")
	if err := WriteFileAtomic(target, old); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(dir, "ready")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperKilledSave$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BPO_MT_KILL_HELPER="+target, "BPO_MT_KILL_READY="+ready)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("helper never became ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	got, err := os.ReadFile(target)
	if err != nil || string(got) != string(old) {
		t.Fatalf("target after kill: %q, %v", got, err)
	}
	// The partial temporary file is there (the kill left it), and it is not the target.
	matches, _ := filepath.Glob(filepath.Join(dir, ".data.bin.tmp-*"))
	if len(matches) != 1 {
		t.Fatalf("temporary files: %v", matches)
	}
	if fi, _ := os.Stat(matches[0]); fi.Size() == 0 {
		t.Fatalf("helper wrote nothing before the kill")
	}
}

func TestHelperKilledSave(t *testing.T) {
	target := os.Getenv("BPO_MT_KILL_HELPER")
	if target == "" {
		t.Skip("helper process for TestKilledSaveKeepsOldFile")
	}
	WriteFileAtomicFunc(target, func(w io.Writer) error {
		chunk := make([]byte, 1<<20)
		for i := 0; i < 3; i++ { // more than the write buffer, so bytes reach the file
			w.Write(chunk)
		}
		os.WriteFile(os.Getenv("BPO_MT_KILL_READY"), nil, 0o644)
		time.Sleep(time.Hour)
		return nil
	})
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	for _, s := range []string{"one", "two, longer", "3"} {
		if err := WriteFileAtomic(p, []byte(s)); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		if string(b) != s {
			t.Fatalf("got %q want %q", b, s)
		}
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", fi.Mode())
	}
	// A missing folder is created; a folder that is a file is an error naming the path.
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "f"), nil); err != nil {
		t.Fatalf("write into a missing folder: %v", err)
	}
	if err := WriteFileAtomic(filepath.Join(p, "f"), nil); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("write under a file: %v", err)
	}
}
