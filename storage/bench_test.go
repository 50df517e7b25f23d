package storage

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/bpo-dev/bpo/storage/storagetest"
)

// go test ./storage -run '^$' -bench . -benchtime 20x
// Numbers are for loopback: they measure this package's and the driver's overhead, not a
// real network's latency or bandwidth.

func benchStores(b *testing.B) map[string]*Store {
	srv := storagetest.Start(b)
	out := map[string]*Store{}
	for name, uri := range map[string]string{"file": "file://" + b.TempDir(), "s3": srv.NewBucket(b)} {
		o := Options{}
		if name == "s3" {
			o = s3Options(srv)
		}
		s, err := Open(context.Background(), uri, o)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		out[name] = s
	}
	return out
}

func BenchmarkVersityGWStart(b *testing.B) {
	for range b.N {
		storagetest.Start(b)
	}
}

// BenchmarkSmallObject is one write and one read of a done marker sized object.
func BenchmarkSmallObject(b *testing.B) {
	for name, s := range benchStores(b) {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			data := bytes.Repeat([]byte("x"), 300)
			for i := range b.N {
				key := fmt.Sprintf("phase-1/sample-%d.done.json", i)
				if err := s.Write(ctx, key, data); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Read(ctx, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPublishStage publishes 8 files of 8 MiB and a marker, then stages them back.
func BenchmarkPublishStage(b *testing.B) {
	for name, s := range benchStores(b) {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			local := b.TempDir()
			files := map[string]string{"phase-1/sample-0.done.json": "{}"}
			for i := range 8 {
				files[fmt.Sprintf("phase-1/members/member-%d/adapter.safetensors", i)] = string(bytes.Repeat([]byte{byte(i)}, 8<<20))
			}
			writeLocal(b, local, files)
			b.SetBytes(2 * 64 << 20)
			b.ResetTimer()
			for range b.N {
				if _, err := Publish(ctx, s, local, "run", []string{"phase-1/members/"}, "phase-1/sample-0.done.json"); err != nil {
					b.Fatal(err)
				}
				if _, err := Stage(ctx, s, "run", b.TempDir(), "phase-1/members/"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
