package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	forEach(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		data := []byte(`{"name":"run-a"}` + "\n")
		if err := s.Write(ctx, "phase-1/samples/shard-0.jsonl", data); err != nil {
			t.Fatal(err)
		}
		got, err := s.Read(ctx, "phase-1/samples/shard-0.jsonl")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Read = %q, %v; want %q", got, err, data)
		}
		r, err := s.NewReader(ctx, "phase-1/samples/shard-0.jsonl")
		if err != nil {
			t.Fatal(err)
		}
		streamed, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(streamed, data) {
			t.Fatalf("NewReader = %q, %v", streamed, err)
		}
		if _, err := s.Read(ctx, "phase-1/samples/shard-9.jsonl"); !errors.Is(err, ErrNotExist) {
			t.Fatalf("Read of a missing object: %v, want ErrNotExist", err)
		}
	})
}
