package model

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// headerOnlyFile is a safetensors file of n one-element F32 tensors with long names: almost
// all of it is header.
func headerOnlyFile(n int) []byte {
	var h strings.Builder
	h.WriteString(`{"__metadata__":{"format":"pt"}`)
	for i := range n {
		fmt.Fprintf(&h, `,"transformer.h.%d.attn.some_rather_long_parameter_name.weight":{"dtype":"F32","shape":[1],"data_offsets":[%d,%d]}`, i, 4*i, 4*i+4)
	}
	h.WriteString("}")
	for h.Len()%8 != 0 {
		h.WriteByte(' ')
	}
	out := make([]byte, 8, 8+h.Len()+4*n)
	binary.LittleEndian.PutUint64(out, uint64(h.Len()))
	out = append(out, h.String()...)
	return append(out, make([]byte, 4*n)...)
}

// BenchmarkParseHeader reports the bytes allocated per header byte when a safetensors file
// with a large header (100k tensors, ~12 MB) is parsed: "a large safetensors header costs
// about 15x its size in memory" was a finding of the hardening review.
func BenchmarkParseHeader(b *testing.B) {
	data := headerOnlyFile(100_000)
	hlen := binary.LittleEndian.Uint64(data)
	b.ReportAllocs()
	b.ResetTimer()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range b.N {
		if _, _, err := wioParse("bench", data); err != nil {
			b.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/float64(hlen), "alloc-bytes/header-byte")
}
