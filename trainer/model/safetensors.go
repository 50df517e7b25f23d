package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/nlpodyssey/safetensors"
	"github.com/x448/float16"
)

// Safetensors I/O. A file is an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}} padded with
// spaces to a multiple of 8 bytes, then the tensor data, contiguous, in header-key order.
// Writing and parsing use github.com/nlpodyssey/safetensors; before handing a file to
// it, the header is checked here so that a truncated or corrupt file gets an error
// naming the file and, where it applies, the tensor.

// wioMaxHeader bounds the JSON header (the library's limit).
const wioMaxHeader = 100_000_000

// SaveTensors writes tensors as F32 with the given __metadata__ (may be nil) to path,
// atomically. Values that overflow float32 are an error.
func SaveTensors(path string, tensors map[string]*Tensor, metadata map[string]string) error {
	return wioSave(path, tensors, metadata, safetensors.F32)
}

// SaveTensorsF64 is SaveTensors with F64 data (lossless; for optimizer state and other
// files that must round-trip exactly).
func SaveTensorsF64(path string, tensors map[string]*Tensor, metadata map[string]string) error {
	return wioSave(path, tensors, metadata, safetensors.F64)
}

// SaveTensorsF16 is SaveTensors with IEEE binary16 data, half the bytes of F32: for vendored
// weights that must fit a size budget. Each value is rounded to float32 and then to the nearest
// binary16 (ties to even); values that round past the largest finite half (65504) are an error,
// as is anything beyond float32. LoadTensors reads the file back exactly.
func SaveTensorsF16(path string, tensors map[string]*Tensor, metadata map[string]string) error {
	return wioSave(path, tensors, metadata, safetensors.F16)
}

// EncodeTensors writes a safetensors file to w. dtype is "F16", "F32" or "F64".
func EncodeTensors(w io.Writer, tensors map[string]*Tensor, metadata map[string]string, dtype string) error {
	var dt safetensors.DType
	switch dtype {
	case "F16":
		dt = safetensors.F16
	case "F32":
		dt = safetensors.F32
	case "F64":
		dt = safetensors.F64
	default:
		return fmt.Errorf("safetensors: unsupported dtype %q for writing (want F16, F32 or F64)", dtype)
	}
	return wioEncode(w, tensors, metadata, dt)
}

// LoadTensors reads a safetensors file (F32, F64, BF16 or F16 tensors) into float64
// tensors, with its __metadata__ (nil if absent). Errors name the file and the tensor.
func LoadTensors(path string) (map[string]*Tensor, map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return DecodeTensors(path, data)
}

// DecodeTensors parses safetensors bytes; name is used in error messages.
func DecodeTensors(name string, data []byte) (map[string]*Tensor, map[string]string, error) {
	st, meta, err := wioParse(name, data)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]*Tensor, st.Len())
	for _, nv := range st.Tensors() {
		t, err := wioToTensor(nv.TensorView)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: tensor %s: %w", name, nv.Name, err)
		}
		out[nv.Name] = t
	}
	return out, meta, nil
}

// LoadWeights reads a Hugging Face GPT-2 model directory: config.json and
// model.safetensors. Tensor names may carry the "transformer." prefix of
// GPT2LMHeadModel; lm_head.weight (tied to wte.weight) and the h.N.attn.bias /
// h.N.attn.masked_bias buffers are ignored. Every parameter must be present with the
// shape the config implies, and nothing else may be; errors name the file and the
// tensor. Before reading the tensors it checks that the weights (and the file, read whole)
// fit in the container's memory limit (CheckMemory).
func LoadWeights(dir string) (*Weights, error) {
	cfg, err := ReadConfig(wioConfigPath(dir))
	if err != nil {
		return nil, err
	}
	path := wioWeightsPath(dir)
	if err := checkLoadMemory(cfg, wioConfigPath(dir), path); err != nil {
		return nil, err
	}
	st, _, err := wioReadSafetensors(path)
	if err != nil {
		return nil, err
	}
	want := cfg.ParamShapes()
	tensors := make(map[string]*Tensor, len(want))
	origin := map[string]string{}
	for _, nv := range st.Tensors() {
		name := strings.TrimPrefix(nv.Name, "transformer.")
		if name == "lm_head.weight" || wioIsAttnBuffer(name) {
			continue
		}
		shape, ok := want[name]
		if !ok {
			return nil, fmt.Errorf("%s: unexpected tensor %s (not a GPT-2 parameter for this config.json)", path, nv.Name)
		}
		if prev, dup := origin[name]; dup {
			return nil, fmt.Errorf("%s: tensors %s and %s are the same parameter", path, prev, nv.Name)
		}
		origin[name] = nv.Name
		got := wioIntShape(nv.TensorView.Shape())
		if !slices.Equal(got, shape) {
			return nil, fmt.Errorf("%s: tensor %s has shape %v, want %v", path, name, got, shape)
		}
		t, err := wioToTensor(nv.TensorView)
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %w", path, name, err)
		}
		tensors[name] = t
	}
	w := &Weights{Config: cfg, Tensors: tensors}
	if err := wioCheckTensorSet(tensors, want, true); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return w, nil
}

// wioIsAttnBuffer reports the causal-mask buffers HF GPT-2 checkpoints may carry.
func wioIsAttnBuffer(name string) bool {
	if !strings.HasPrefix(name, "h.") {
		return false
	}
	return strings.HasSuffix(name, ".attn.bias") || strings.HasSuffix(name, ".attn.masked_bias")
}

// SaveWeights writes dir/model.safetensors (F32, Hugging Face GPT-2 names without the
// "transformer." prefix, tied lm_head omitted, __metadata__ {"format": "pt"}) and then
// dir/config.json, each atomically. dir is created if needed.
func SaveWeights(dir string, w *Weights) error { return saveWeights(dir, w, safetensors.F32) }

// SaveWeightsF16 is SaveWeights with binary16 weights (SaveTensorsF16: round to nearest even)
// and torch_dtype "float16" in config.json: half the bytes, for vendored models. Loading gives
// float32 values exactly equal to the rounded ones, so whatever is trained on the loaded model
// (the SFT adapters) sees the very weights every later user loads.
func SaveWeightsF16(dir string, w *Weights) error { return saveWeights(dir, w, safetensors.F16) }

func saveWeights(dir string, w *Weights, dt safetensors.DType) error {
	if err := w.Validate(); err != nil {
		return fmt.Errorf("save weights to %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := wioSave(wioWeightsPath(dir), w.Tensors, map[string]string{"format": "pt"}, dt); err != nil {
		return err
	}
	torchDtype := "float32"
	if dt == safetensors.F16 {
		torchDtype = "float16"
	}
	b, err := encodeConfig(w.Config, torchDtype)
	if err != nil {
		return fmt.Errorf("%s: %w", wioConfigPath(dir), err)
	}
	return WriteFileAtomic(wioConfigPath(dir), b)
}

// SaveAdapter writes an adapter as F32 tensors "h.N.<target>.lora_A|lora_B" with
// __metadata__ {"format": "pt", "rank": r, "alpha": alpha}, atomically.
func SaveAdapter(path string, a *Adapter) error {
	if err := a.ValidateShape(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	meta := map[string]string{
		"format": "pt",
		"rank":   strconv.Itoa(a.Rank),
		"alpha":  strconv.FormatFloat(a.Alpha, 'g', -1, 64),
	}
	return SaveTensors(path, a.Tensors, meta)
}

// LoadAdapter reads an adapter written by SaveAdapter (rank and alpha from
// __metadata__) and checks its structure (see (*Adapter).ValidateShape).
func LoadAdapter(path string) (*Adapter, error) {
	tensors, meta, err := LoadTensors(path)
	if err != nil {
		return nil, err
	}
	rs, ok := meta["rank"]
	if !ok {
		return nil, fmt.Errorf("%s: __metadata__ has no \"rank\"", path)
	}
	rank, err := strconv.Atoi(rs)
	if err != nil {
		return nil, fmt.Errorf("%s: __metadata__ rank %q is not an integer", path, rs)
	}
	as, ok := meta["alpha"]
	if !ok {
		return nil, fmt.Errorf("%s: __metadata__ has no \"alpha\"", path)
	}
	alpha, err := strconv.ParseFloat(as, 64)
	if err != nil {
		return nil, fmt.Errorf("%s: __metadata__ alpha %q is not a number", path, as)
	}
	a := &Adapter{Rank: rank, Alpha: alpha, Tensors: tensors}
	if err := a.ValidateShape(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// LoadAdapterFor is LoadAdapter plus (*Adapter).Validate against cfg.
func LoadAdapterFor(path string, cfg Config) (*Adapter, error) {
	a, err := LoadAdapter(path)
	if err != nil {
		return nil, err
	}
	if err := a.Validate(cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// ---- writing ----

// wioView adapts a *Tensor to the library's View, converting on demand.
type wioView struct {
	dt    safetensors.DType
	shape []uint64
	t     *Tensor
}

func (v wioView) DType() safetensors.DType { return v.dt }
func (v wioView) Shape() []uint64          { return v.shape }
func (v wioView) DataLen() uint64          { return uint64(len(v.t.Data)) * v.dt.Size() }
func (v wioView) Data() []byte {
	switch v.dt {
	case safetensors.F16:
		b := make([]byte, 2*len(v.t.Data))
		for i, x := range v.t.Data {
			binary.LittleEndian.PutUint16(b[2*i:], float16.Fromfloat32(float32(x)).Bits())
		}
		return b
	case safetensors.F32:
		b := make([]byte, 4*len(v.t.Data))
		for i, x := range v.t.Data {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(x)))
		}
		return b
	default:
		b := make([]byte, 8*len(v.t.Data))
		for i, x := range v.t.Data {
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
		}
		return b
	}
}

// wioPrepare checks tensors for writing and wraps them as library views.
func wioPrepare(tensors map[string]*Tensor, dt safetensors.DType) (map[string]wioView, error) {
	views := make(map[string]wioView, len(tensors))
	for _, name := range wioSortedKeys(tensors) {
		t := tensors[name]
		if name == "" || name == "__metadata__" {
			return nil, fmt.Errorf("invalid tensor name %q", name)
		}
		if t == nil {
			return nil, fmt.Errorf("tensor %s is nil", name)
		}
		shape := make([]uint64, len(t.Shape))
		for i, s := range t.Shape {
			if s < 0 {
				return nil, fmt.Errorf("tensor %s has negative shape %v", name, t.Shape)
			}
			shape[i] = uint64(s)
		}
		if len(t.Data) != wioNumel(t.Shape) {
			return nil, fmt.Errorf("tensor %s has %d values for shape %v", name, len(t.Data), t.Shape)
		}
		switch dt {
		case safetensors.F32:
			for i, x := range t.Data {
				if math.Abs(x) > math.MaxFloat32 && !math.IsInf(x, 0) {
					return nil, fmt.Errorf("tensor %s value %g at index %d overflows F32", name, x, i)
				}
			}
		case safetensors.F16:
			for i, x := range t.Data {
				if math.IsInf(x, 0) || math.IsNaN(x) {
					continue
				}
				// Beyond float32 the conversion gives Inf too.
				if float16.Fromfloat32(float32(x)).IsInf(0) {
					return nil, fmt.Errorf("tensor %s value %g at index %d overflows F16 (largest finite 65504): save as F32", name, x, i)
				}
			}
		}
		views[name] = wioView{dt: dt, shape: shape, t: t}
	}
	return views, nil
}

func wioMeta(metadata map[string]string) map[string]string {
	if len(metadata) == 0 {
		return nil
	}
	return metadata
}

func wioEncode(w io.Writer, tensors map[string]*Tensor, metadata map[string]string, dt safetensors.DType) error {
	views, err := wioPrepare(tensors, dt)
	if err != nil {
		return err
	}
	return safetensors.SerializeToWriter(views, wioMeta(metadata), w)
}

func wioSave(path string, tensors map[string]*Tensor, metadata map[string]string, dt safetensors.DType) error {
	// Check before creating the temporary file, so that a bad tensor never touches disk.
	views, err := wioPrepare(tensors, dt)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return WriteFileAtomicFunc(path, func(w io.Writer) error {
		return safetensors.SerializeToWriter(views, wioMeta(metadata), w)
	})
}

// ---- reading ----

func wioReadSafetensors(path string) (wioFile, map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return wioFile{}, nil, err
	}
	return wioParse(path, data)
}

// wioHeaderEntry is one tensor of the JSON header.
type wioHeaderEntry struct {
	DType       string    `json:"dtype"`
	Shape       []uint64  `json:"shape"`
	DataOffsets [2]uint64 `json:"data_offsets"`
}

// wioFile is a parsed safetensors file: views of its tensors over the file's bytes, in data
// order. It has the reading methods of the library's SafeTensors.
type wioFile struct {
	tensors []wioNamedTensor
}

// wioTensor is one tensor's dtype, shape and bytes (a slice of the file). The library's
// TensorView cannot hold a scalar (shape []: it counts 0 elements, the format says 1).
type wioTensor struct {
	dtype safetensors.DType
	shape []uint64
	data  []byte
}

func (t wioTensor) DType() safetensors.DType { return t.dtype }
func (t wioTensor) Shape() []uint64          { return t.shape }
func (t wioTensor) Data() []byte             { return t.data }

// wioNamedTensor is a tensor with its name.
type wioNamedTensor struct {
	Name       string
	TensorView wioTensor
}

// Tensors lists the tensors in data order.
func (f wioFile) Tensors() []wioNamedTensor { return f.tensors }

// Len is the number of tensors.
func (f wioFile) Len() int { return len(f.tensors) }

// Names lists the tensor names in data order.
func (f wioFile) Names() []string {
	names := make([]string, len(f.tensors))
	for i, t := range f.tensors {
		names[i] = t.Name
	}
	return names
}

// Tensor is the named tensor's view.
func (f wioFile) Tensor(name string) (wioTensor, bool) {
	for _, t := range f.tensors {
		if t.Name == name {
			return t.TensorView, true
		}
	}
	return wioTensor{}, false
}

// wioParse parses and checks a safetensors file, naming the file and the tensor on failure.
// The header is decoded once, entry by entry, and the tensors are views of data: a header
// costs a few times its size in memory (the library's own parser, through map[string]any
// and a second pass, cost about 15 times; BenchmarkParseHeader measures it). Duplicate names
// are refused rather than resolved to whichever came last.
func wioParse(name string, data []byte) (wioFile, map[string]string, error) {
	fail := func(format string, args ...any) (wioFile, map[string]string, error) {
		return wioFile{}, nil, fmt.Errorf("%s: "+format, append([]any{name}, args...)...)
	}
	size := uint64(len(data))
	if size < 8 {
		return fail("file is %d bytes, too short for a safetensors header (truncated?)", size)
	}
	n := binary.LittleEndian.Uint64(data[:8])
	if n > wioMaxHeader {
		return fail("header length %d exceeds the %d-byte limit (corrupt or not a safetensors file)", n, wioMaxHeader)
	}
	if n > size-8 {
		return fail("header length %d exceeds the file size %d (truncated or not a safetensors file)", n, size)
	}
	type entry struct {
		name string
		wioHeaderEntry
	}
	var (
		entries []entry
		meta    map[string]string
		seen    = map[string]bool{}
	)
	notJSON := func(err error) (wioFile, map[string]string, error) {
		return fail("header is not valid JSON (corrupt or not a safetensors file): %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data[8 : 8+n]))
	if tok, err := dec.Token(); err != nil {
		return notJSON(err)
	} else if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fail("header is not a JSON object (corrupt or not a safetensors file)")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return notJSON(err)
		}
		k := tok.(string) // an object's keys are strings, or Token fails
		if seen[k] {
			return fail("header names %q twice (corrupt file)", k)
		}
		seen[k] = true
		if k == "__metadata__" {
			if err := dec.Decode(&meta); err != nil {
				return fail("__metadata__ must map strings to strings: %v", err)
			}
			continue
		}
		var raw struct {
			DType       *string    `json:"dtype"`
			Shape       *[]uint64  `json:"shape"`
			DataOffsets *[2]uint64 `json:"data_offsets"`
		}
		if err := dec.Decode(&raw); err != nil {
			return fail("tensor %s: bad header entry: %v", k, err)
		}
		if raw.DType == nil || raw.Shape == nil || raw.DataOffsets == nil {
			return fail("tensor %s: a header entry needs dtype, shape and data_offsets", k)
		}
		entries = append(entries, entry{k, wioHeaderEntry{*raw.DType, *raw.Shape, *raw.DataOffsets}})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return notJSON(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail("header has data after its JSON object (corrupt file)")
	}
	dataLen := size - 8 - n
	body := data[8+n:]
	sort.Slice(entries, func(i, j int) bool {
		a, b := entries[i].DataOffsets, entries[j].DataOffsets
		return a[0] < b[0] || (a[0] == b[0] && (a[1] < b[1] || (a[1] == b[1] && entries[i].name < entries[j].name)))
	})
	out := wioFile{tensors: make([]wioNamedTensor, 0, len(entries))}
	var pos uint64
	for _, e := range entries {
		dt, err := safetensors.ParseDType(e.DType)
		if err != nil {
			return fail("tensor %s: unknown dtype %q", e.name, e.DType)
		}
		numel := uint64(1)
		for _, s := range e.Shape {
			if s > math.MaxInt {
				// Only possible with another dimension 0; it would turn negative as an int.
				return fail("tensor %s: shape %v has a dimension above %d", e.name, e.Shape, math.MaxInt)
			}
			hi, lo := bits.Mul64(numel, s)
			if hi != 0 {
				return fail("tensor %s: shape %v overflows", e.name, e.Shape)
			}
			numel = lo
		}
		hi, nbytes := bits.Mul64(numel, dt.Size())
		start, end := e.DataOffsets[0], e.DataOffsets[1]
		switch {
		case hi != 0:
			return fail("tensor %s: shape %v overflows", e.name, e.Shape)
		case end < start:
			return fail("tensor %s: data_offsets [%d %d] are reversed", e.name, start, end)
		case end > dataLen:
			return fail("tensor %s: data_offsets [%d %d] out of range, the file holds %d data bytes (truncated?)", e.name, start, end, dataLen)
		case start != pos:
			return fail("tensor %s: data_offsets [%d %d] are not contiguous (expected start %d)", e.name, start, end, pos)
		case end-start != nbytes:
			return fail("tensor %s: data_offsets [%d %d] hold %d bytes, but %s%v needs %d", e.name, start, end, end-start, e.DType, e.Shape, nbytes)
		}
		out.tensors = append(out.tensors, wioNamedTensor{e.name, wioTensor{dt, e.Shape, body[start:end:end]}})
		pos = end
	}
	if pos != dataLen {
		return fail("%d trailing bytes after the last tensor (corrupt file)", dataLen-pos)
	}
	return out, meta, nil
}

func wioIntShape(s []uint64) []int {
	out := make([]int, len(s))
	for i, v := range s {
		out[i] = int(v)
	}
	return out
}

// wioToTensor converts a float tensor view to float64.
func wioToTensor(v wioTensor) (*Tensor, error) {
	shape := wioIntShape(v.Shape())
	t := NewTensor(shape...)
	b := v.Data()
	switch v.DType() {
	case safetensors.F32:
		for i := range t.Data {
			t.Data[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		}
	case safetensors.F64:
		for i := range t.Data {
			t.Data[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
	case safetensors.BF16:
		for i := range t.Data {
			t.Data[i] = float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16))
		}
	case safetensors.F16:
		for i := range t.Data {
			t.Data[i] = float64(float16.Frombits(binary.LittleEndian.Uint16(b[2*i:])).Float32())
		}
	default:
		return nil, fmt.Errorf("dtype %s is not supported (want F32, F64, BF16 or F16)", v.DType())
	}
	return t, nil
}
