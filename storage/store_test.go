package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bpo-dev/bpo/storage/storagetest"
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

		// Overwrite with binary content of another length.
		bin := bytes.Repeat([]byte{0, 0xff, '\n', 7}, 10000)
		if n, err := s.WriteFrom(ctx, "phase-1/samples/shard-0.jsonl", bytes.NewReader(bin)); err != nil || n != int64(len(bin)) {
			t.Fatalf("WriteFrom = %d, %v", n, err)
		}
		if got, err := s.Read(ctx, "phase-1/samples/shard-0.jsonl"); err != nil || !bytes.Equal(got, bin) {
			t.Fatalf("Read after overwrite: %d bytes, %v", len(got), err)
		}
		if ok, err := s.Exists(ctx, "phase-1/samples/shard-0.jsonl"); !ok || err != nil {
			t.Fatalf("Exists = %v, %v", ok, err)
		}

		for name, call := range map[string]func() error{
			"Read":      func() error { _, err := s.Read(ctx, "phase-1/samples/shard-9.jsonl"); return err },
			"NewReader": func() error { _, err := s.NewReader(ctx, "phase-1/samples/shard-9.jsonl"); return err },
		} {
			err := call()
			if !errors.Is(err, ErrNotExist) || !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s of a missing object: %v, want ErrNotExist", name, err)
			}
			if want := s.String() + "/phase-1/samples/shard-9.jsonl: not found"; !strings.HasSuffix(err.Error(), want) {
				t.Errorf("%s error %q should end with %q", name, err, want)
			}
		}
		if ok, err := s.Exists(ctx, "nope"); ok || err != nil {
			t.Fatalf("Exists(missing) = %v, %v", ok, err)
		}
		if _, err := s.Read(ctx, "../other-run/owner.json"); err == nil || !strings.Contains(err.Error(), `".." segment`) {
			t.Fatalf("a key escaping the store was not refused: %v", err)
		}
	})
}

// A multipart upload (an object larger than PartSize) is as atomic as a single PUT.
func TestLargeObjectMultipart(t *testing.T) {
	forEach(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		s.partSize = 5 << 20
		data := make([]byte, 11<<20+123)
		for i := range data {
			data[i] = byte(i * 7 / 3)
		}
		if err := s.Write(ctx, "phase-1/behavior/model.safetensors", data); err != nil {
			t.Fatal(err)
		}
		got, err := s.Read(ctx, "phase-1/behavior/model.safetensors")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Read: %d bytes (want %d), %v", len(got), len(data), err)
		}
	})
}

// failingReader yields n bytes, then fails: a source that breaks mid-upload.
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("source broke")
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

// A write abandoned half-way leaves the old object (or none), never a part: in one PUT, and
// in a multipart upload that already sent whole parts.
func TestAbandonedWriteLeavesNoPart(t *testing.T) {
	forEach(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		s.partSize = 5 << 20
		for _, size := range []int{100 << 10, 12 << 20} {
			if _, err := s.WriteFrom(ctx, "new.bin", &failingReader{n: size}); err == nil || !strings.Contains(err.Error(), "source broke") {
				t.Fatalf("WriteFrom with a broken source (%d bytes sent) = %v, want its error", size, err)
			}
			if _, err := s.Read(ctx, "new.bin"); !errors.Is(err, ErrNotExist) {
				t.Fatalf("after an abandoned write of %d bytes the object exists: %v", size, err)
			}
			old := []byte("old content\n")
			if err := s.Write(ctx, "old.bin", old); err != nil {
				t.Fatal(err)
			}
			if _, err := s.WriteFrom(ctx, "old.bin", &failingReader{n: size}); err == nil {
				t.Fatal("WriteFrom with a broken source succeeded")
			}
			if got, err := s.Read(ctx, "old.bin"); err != nil || !bytes.Equal(got, old) {
				t.Fatalf("an abandoned overwrite (%d bytes sent) changed the object: %d bytes, %v", size, len(got), err)
			}
		}
		if objs, err := s.List(ctx, ""); err != nil || len(objs) != 1 || objs[0].Key != "old.bin" {
			t.Fatalf("List after abandoned writes = %v, %v; want only old.bin", objs, err)
		}
	})
}

func TestList(t *testing.T) {
	forEach(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		keys := []string{
			"owner.json",
			"phase-1/sample-0.done.json",
			"phase-1/samples/shard-1.jsonl",
			"phase-1/samples/shard-0.jsonl",
			"phase-1/samplesX/other.jsonl", // shares the string prefix, not the folder
			"phase-1/members/member-0/adapter.safetensors",
			"phase-2/samples/shard-0.jsonl",
		}
		for i, k := range keys {
			if err := s.Write(ctx, k, bytes.Repeat([]byte("a"), i+1)); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			prefix string
			want   []string
		}{
			{"phase-1/samples", []string{"phase-1/samples/shard-0.jsonl", "phase-1/samples/shard-1.jsonl"}},
			{"phase-1/samples/", []string{"phase-1/samples/shard-0.jsonl", "phase-1/samples/shard-1.jsonl"}},
			{"phase-1/members", []string{"phase-1/members/member-0/adapter.safetensors"}},
			{"phase-3", nil},
			{"", []string{
				"owner.json", "phase-1/members/member-0/adapter.safetensors", "phase-1/sample-0.done.json",
				"phase-1/samples/shard-0.jsonl", "phase-1/samples/shard-1.jsonl", "phase-1/samplesX/other.jsonl",
				"phase-2/samples/shard-0.jsonl",
			}},
		} {
			objs, err := s.List(ctx, tc.prefix)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range objs {
				got = append(got, o.Key)
				if o.Key == "phase-1/samples/shard-0.jsonl" && o.Size != 4 {
					t.Errorf("%s: size %d, want 4", o.Key, o.Size)
				}
				if o.ModTime.IsZero() {
					t.Errorf("%s: no modification time", o.Key)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("List(%q) = %v, want %v", tc.prefix, got, tc.want)
			}
		}
		// A Sub store lists relative to itself.
		sub, err := s.Sub("phase-1/")
		if err != nil {
			t.Fatal(err)
		}
		objs, err := sub.List(ctx, "samples")
		if err != nil || len(objs) != 2 || objs[0].Key != "samples/shard-0.jsonl" {
			t.Fatalf("Sub(phase-1).List(samples) = %v, %v", objs, err)
		}
		if got, err := sub.Read(ctx, "sample-0.done.json"); err != nil || string(got) != "aa" {
			t.Fatalf("Sub read = %q, %v", got, err)
		}
		if want := s.String() + "/phase-1"; sub.String() != want {
			t.Errorf("Sub.String() = %q, want %q", sub.String(), want)
		}
	})
}

// Temp files of a write in progress (or of a killed writer) on a shared folder are never
// listed, so Stage never downloads one as an input.
func TestListSkipsTempFiles(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, "file://"+dir, Options{})
	ctx := context.Background()
	if err := s.Write(ctx, "phase-1/pairs/shard-0.jsonl", []byte("{}\n")); err != nil {
		t.Fatal(err)
	}
	for _, stray := range []string{"shard-1.jsonl.18a2b3c4d5e6f.tmp", ".shard-2.jsonl.tmp-999"} {
		if err := os.WriteFile(filepath.Join(dir, "phase-1", "pairs", stray), []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := s.List(ctx, "phase-1/pairs")
	if err != nil || len(objs) != 1 || objs[0].Key != "phase-1/pairs/shard-0.jsonl" {
		t.Fatalf("List = %v, %v; want only shard-0.jsonl", objs, err)
	}
}

func TestDelete(t *testing.T) {
	forEach(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		if err := s.Write(ctx, "phase-1/eval/result.json", []byte("{}")); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "phase-1/eval/result.json"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.Exists(ctx, "phase-1/eval/result.json"); ok {
			t.Fatal("object still there after Delete")
		}
		if err := s.Delete(ctx, "phase-1/eval/result.json"); err != nil {
			t.Fatalf("a second Delete (a retry) failed: %v", err)
		}
	})
}

func TestCreateOnly(t *testing.T) {
	forEach(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		first := []byte(`{"name":"run-a","uid":"uid-1"}`)
		if err := s.Create(ctx, "run-a/owner.json", first); err != nil {
			t.Fatal(err)
		}
		err := s.Create(ctx, "run-a/owner.json", []byte(`{"name":"run-a","uid":"uid-2"}`))
		if !errors.Is(err, ErrExist) || !errors.Is(err, os.ErrExist) {
			t.Fatalf("second Create = %v, want ErrExist", err)
		}
		if want := s.String() + "/run-a/owner.json: already exists"; !strings.Contains(err.Error(), want) {
			t.Errorf("second Create's error %q should say %q", err, want)
		}
		if got, _ := s.Read(ctx, "run-a/owner.json"); !bytes.Equal(got, first) {
			t.Fatalf("the losing Create changed the object: %s", got)
		}

		// Many writers race for one key: exactly one wins, and its content is what stays.
		const racers = 8
		var wg sync.WaitGroup
		errs := make([]error, racers)
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.Create(ctx, "run-b/owner.json", []byte(fmt.Sprintf(`{"uid":"racer-%d"}`, i)))
			}()
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("racers %d and %d both won", winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, ErrExist):
				t.Fatalf("racer %d: %v, want ErrExist", i, err)
			}
		}
		if winner < 0 {
			t.Fatal("no racer won")
		}
		if got, _ := s.Read(ctx, "run-b/owner.json"); string(got) != fmt.Sprintf(`{"uid":"racer-%d"}`, winner) {
			t.Fatalf("stored %s, but racer %d won", got, winner)
		}
	})
}

// Two processes sharing a folder (two pods on one RWX volume) are two stores: the create-only
// guarantee must not rest on a lock inside one of them.
func TestCreateOnlyAcrossStoresOnOneFolder(t *testing.T) {
	dir := t.TempDir()
	a := mustOpen(t, "file://"+dir, Options{})
	b := mustOpen(t, "file://"+dir, Options{})
	ctx := context.Background()
	if err := a.Create(ctx, "owner.json", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(ctx, "owner.json", []byte("b")); !errors.Is(err, ErrExist) {
		t.Fatalf("second store's Create = %v, want ErrExist", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("the folder holds %d entries, want owner.json only (no temp file left)", len(entries))
	}
}

// Ping tells a working store from a missing bucket or an unreachable server, and a missing
// bucket is never mistaken for a missing object (a stage would take it for "not done yet").
func TestPing(t *testing.T) {
	forEach(t, func(t *testing.T, s *Store) {
		if err := s.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPingFailures(t *testing.T) {
	srv := storagetest.Start(t)
	ctx := context.Background()
	missing := mustOpen(t, "s3://no-such-bucket/runs", s3Options(srv))
	for op, call := range map[string]func() error{
		"ping": func() error { return missing.Ping(ctx) },
		"read": func() error { _, err := missing.Read(ctx, "owner.json"); return err },
	} {
		err := call()
		if err == nil || errors.Is(err, ErrNotExist) || !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) {
			t.Errorf("%s on a missing bucket = %v, want a clear error that is not ErrNotExist", op, err)
		}
	}
	o := s3Options(srv)
	o.Endpoint = "http://" + closedPort(t)
	o.MaxAttempts = 1
	down := mustOpen(t, "s3://bucket", o)
	if err := down.Ping(ctx); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Ping of a server that is down = %v, want connection refused", err)
	}
}

// closedPort is a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
