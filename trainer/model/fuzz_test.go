package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// Fuzz targets for the two model-directory parsers that read outside files:
// safetensors (DecodeTensors) and config.json (DecodeConfig). hack/fuzz.sh runs them
// for a few seconds each; the seeds below (and testdata/fuzz/<Target>/) run with
// every `go test`.

// fzSafetensorsSeeds are real files plus small hand-made ones covering every dtype and
// the edge cases of the header (empty, metadata only, zero-sized tensors).
func fzSafetensorsSeeds(f *testing.F) {
	// The golden model's header with its data cut short: a realistic header the fuzzer
	// can shrink into a consistent file.
	b, err := os.ReadFile("testdata/golden/model.safetensors")
	if err != nil || len(b) < 8 {
		f.Fatal(err)
	}
	if n := binary.LittleEndian.Uint64(b[:8]); n <= uint64(len(b)-8) {
		f.Add(b[:8+n])
	}
	enc := func(tensors map[string]*Tensor, meta map[string]string, dtype string) {
		var buf bytes.Buffer
		if err := EncodeTensors(&buf, tensors, meta, dtype); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	// The golden adapter, cut to one LoRA pair (small inputs fuzz faster) with its
	// __metadata__.
	ad, meta, err := LoadTensors("testdata/golden/adapter.safetensors")
	if err != nil {
		f.Fatal(err)
	}
	pair := map[string]*Tensor{}
	for _, name := range []string{"h.0.attn.c_proj.lora_A", "h.0.attn.c_proj.lora_B"} {
		if ad[name] == nil {
			f.Fatalf("golden adapter has no %s", name)
		}
		pair[name] = ad[name]
	}
	enc(pair, meta, "F32")
	small := map[string]*Tensor{
		"a": {Shape: []int{2, 3}, Data: []float64{1, -2, 3.5, 0, math.Inf(1), -0.25}},
		"b": {Shape: []int{}, Data: []float64{7}},
		"z": {Shape: []int{0, 4}, Data: []float64{}},
	}
	enc(small, map[string]string{"format": "pt", "rank": "4", "alpha": "8"}, "F32")
	enc(small, nil, "F64")
	enc(map[string]*Tensor{}, nil, "F32")
	raw := func(header string, data []byte) {
		h := []byte(header)
		for len(h)%8 != 0 {
			h = append(h, ' ')
		}
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
		f.Add(append(append(b, h...), data...))
	}
	raw(`{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1,1],"data_offsets":[4,6]}}`,
		[]byte{0x00, 0x3c, 0x00, 0xfc, 0x80, 0x3f})
	raw(`{"__metadata__":{"k":"v"},"i":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}`, []byte{1, 0, 0, 0})
	raw(`{"x":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}}`, nil)
	raw(`{}`, nil)
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
}

// FuzzDecodeTensors: DecodeTensors returns an error or tensors that are consistent
// with an independent reading of the header: every tensor named there is returned
// (and nothing else), its data_offsets lie inside the data section, the tensors tile
// it without overlap, each returned tensor has as many values as its shape says and
// non-negative dimensions, and the values take at most 4x the input's size (F16/BF16
// widen 2 bytes to 8: no allocation out of proportion to the file). Accepted files
// round-trip exactly through EncodeTensors(F64).
func FuzzDecodeTensors(f *testing.F) {
	fzSafetensorsSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		tensors, meta, err := DecodeTensors("fuzz.safetensors", data)
		if err != nil {
			if tensors != nil || meta != nil {
				t.Fatalf("error %v with non-nil results", err)
			}
			return
		}
		// Independent reading of the header.
		n := binary.LittleEndian.Uint64(data[:8])
		if n > uint64(len(data)-8) {
			t.Fatalf("accepted a header length %d beyond the file size %d", n, len(data))
		}
		var header map[string]json.RawMessage
		if err := json.Unmarshal(data[8:8+n], &header); err != nil {
			t.Fatalf("accepted a header that is not a JSON object: %v", err)
		}
		dataLen := uint64(len(data)) - 8 - n
		type span struct{ start, end uint64 }
		var spans []span
		for name, raw := range header {
			if name == "__metadata__" {
				continue
			}
			var e wioHeaderEntry
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatalf("tensor %q: accepted a bad entry: %v", name, err)
			}
			start, end := e.DataOffsets[0], e.DataOffsets[1]
			if start > end || end > dataLen {
				t.Fatalf("tensor %q: data_offsets [%d %d] outside the %d data bytes", name, start, end, dataLen)
			}
			spans = append(spans, span{start, end})
			tt, ok := tensors[name]
			if !ok || tt == nil {
				t.Fatalf("tensor %q of the header is missing from the result", name)
			}
			if len(tt.Shape) != len(e.Shape) {
				t.Fatalf("tensor %q: shape %v, header says %v", name, tt.Shape, e.Shape)
			}
			numel := 1
			for i, d := range tt.Shape {
				if d < 0 || uint64(d) != e.Shape[i] {
					t.Fatalf("tensor %q: shape %v, header says %v", name, tt.Shape, e.Shape)
				}
				numel *= d
			}
			if len(tt.Data) != numel {
				t.Fatalf("tensor %q: %d values for shape %v", name, len(tt.Data), tt.Shape)
			}
		}
		if len(spans) != len(tensors) {
			t.Fatalf("%d tensors returned, the header has %d", len(tensors), len(spans))
		}
		// By start, then end: an empty tensor at a boundary ([s, s]) touches its neighbours
		// without overlapping them.
		sort.Slice(spans, func(i, j int) bool {
			return spans[i].start < spans[j].start || (spans[i].start == spans[j].start && spans[i].end < spans[j].end)
		})
		var pos uint64
		for _, s := range spans {
			if s.start < pos {
				t.Fatalf("tensors overlap: [%d %d] starts before %d", s.start, s.end, pos)
			}
			pos = s.end
		}
		values := 0
		for _, tt := range tensors {
			values += len(tt.Data)
		}
		if 8*values > 4*len(data) {
			t.Fatalf("%d values (%d bytes) decoded from a %d-byte file", values, 8*values, len(data))
		}
		if _, ok := header["__metadata__"]; !ok && meta != nil {
			t.Fatalf("metadata %v without __metadata__", meta)
		}

		// Round trip through the writer (F64 holds every decoded value exactly).
		var buf bytes.Buffer
		if err := EncodeTensors(&buf, tensors, meta, "F64"); err != nil {
			t.Fatalf("re-encoding accepted tensors: %v", err)
		}
		back, meta2, err := DecodeTensors("again.safetensors", buf.Bytes())
		if err != nil {
			t.Fatalf("decoding the re-encoded file: %v", err)
		}
		if len(meta) == 0 {
			meta = nil
		}
		if !reflect.DeepEqual(meta, meta2) {
			t.Fatalf("metadata %v came back as %v", meta, meta2)
		}
		if len(back) != len(tensors) {
			t.Fatalf("%d tensors came back as %d", len(tensors), len(back))
		}
		for name, tt := range tensors {
			bt := back[name]
			if bt == nil || !reflect.DeepEqual(bt.Shape, tt.Shape) || len(bt.Data) != len(tt.Data) {
				t.Fatalf("tensor %q did not round-trip", name)
			}
			for i := range tt.Data {
				if math.Float64bits(bt.Data[i]) != math.Float64bits(tt.Data[i]) {
					t.Fatalf("tensor %q value %d: %v came back as %v", name, i, tt.Data[i], bt.Data[i])
				}
			}
		}
	})
}

// FuzzDecodeConfig: DecodeConfig returns an error or a config that passes Validate,
// whose implied parameter shapes are all positive without int overflow and whose
// parameter set is bounded (LoadWeights builds it before looking at the data, so a
// huge n_layer would be a memory bomb), and that round-trips through EncodeConfig.
func FuzzDecodeConfig(f *testing.F) {
	for _, p := range []string{
		"testdata/golden/config.json",
		"testdata/golden32/config.json",
		"../task/models/tiny-reviews/config.json",
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	if b, err := EncodeConfig(mtConfig(50257, 1024, 768, 12, 12)); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"n_inner": 64, "n_embd": 16, "n_head": 2, "activation_function": "gelu_pytorch_tanh"}`))
	f.Add([]byte(`{"model_type": "llama"}`))
	f.Add([]byte(`{"n_layer": 1e3, "vocab_size": -1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := DecodeConfig(data)
		if err != nil {
			if !reflect.DeepEqual(cfg, Config{}) {
				t.Fatalf("error %v with a non-zero config", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted an invalid config: %v", err)
		}
		if cfg.NLayer > 1<<16 {
			t.Fatalf("accepted n_layer %d: ParamShapes would build %d entries", cfg.NLayer, 12*cfg.NLayer)
		}
		var total uint64
		for name, shape := range cfg.ParamShapes() {
			numel := uint64(1)
			for _, d := range shape {
				if d <= 0 {
					t.Fatalf("%s: shape %v has a non-positive dimension", name, shape)
				}
				numel *= uint64(d)
				if numel > math.MaxInt32*uint64(math.MaxInt32) {
					t.Fatalf("%s: shape %v overflows", name, shape)
				}
			}
			total += numel
			if total > math.MaxInt64/8 {
				t.Fatalf("the parameters of %+v overflow", cfg)
			}
		}
		enc, err := EncodeConfig(cfg)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", cfg, err)
		}
		back, err := DecodeConfig(enc)
		if err != nil {
			t.Fatalf("decoding the re-encoded config: %v\n%s", err, enc)
		}
		want := cfg
		want.Architectures = []string{"GPT2LMHeadModel"}
		if !reflect.DeepEqual(back, want) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", back, want)
		}
	})
}

// TestDecodeTensorsHugeDimension is the regression test for the first finding of
// FuzzDecodeTensors: a zero-sized tensor may have any other dimension (the element
// count stays 0), and one above MaxInt64 used to come back as a negative int.
func TestDecodeTensorsHugeDimension(t *testing.T) {
	h := []byte(`{"x":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}}`)
	data := append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...)
	_, _, err := DecodeTensors("huge.safetensors", data)
	if err == nil || !strings.Contains(err.Error(), "huge.safetensors: tensor x: shape [0 18446744073709551615] has a dimension above") {
		t.Fatalf("want an error naming the tensor and its shape, got %v", err)
	}
	// Zero-sized tensors with ordinary dimensions still load.
	h = []byte(`{"x":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]}}`)
	data = append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...)
	ts, _, err := DecodeTensors("zero.safetensors", data)
	if err != nil || len(ts["x"].Data) != 0 || !reflect.DeepEqual(ts["x"].Shape, []int{0, 4}) {
		t.Fatalf("zero-sized tensor: %v %v", ts, err)
	}
}
