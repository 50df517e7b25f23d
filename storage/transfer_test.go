package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// writeLocal writes files (relative path -> content) under dir.
func writeLocal(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStage(t *testing.T) {
	forEach(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		remote := map[string]string{
			"run-a/phase-1/behavior/model.safetensors": strings.Repeat("w", 70000),
			"run-a/phase-1/behavior/config.json":       `{"n_layer":2}`,
			"run-a/phase-1/pairs/shard-0.jsonl":        "{\"i\":0}\n",
			"run-a/phase-1/pairs/shard-1.jsonl":        "{\"i\":1}\n",
			"run-a/phase-1/label-0.done.json":          "{}",
			"run-b/phase-1/pairs/shard-0.jsonl":        "other run",
		}
		for k, v := range remote {
			if err := s.Write(ctx, k, []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
		local := t.TempDir()
		st, err := Stage(ctx, s, "run-a", local, "phase-1/behavior/", "phase-1/pairs/shard-1.jsonl", "phase-1/pairs/")
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"phase-1/behavior/config.json", "phase-1/behavior/model.safetensors", "phase-1/pairs/shard-0.jsonl", "phase-1/pairs/shard-1.jsonl"}
		var got []string
		var size int64
		_ = filepath.WalkDir(local, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(local, p)
				got = append(got, filepath.ToSlash(rel))
				data, _ := os.ReadFile(p)
				size += int64(len(data))
				if string(data) != remote["run-a/"+filepath.ToSlash(rel)] {
					t.Errorf("%s: staged %q", rel, data)
				}
			}
			return nil
		})
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("staged %v, want %v (a shard named twice is fetched once)", got, want)
		}
		if st.Objects != 4 || st.Bytes != size {
			t.Errorf("Stats = %+v, want 4 objects, %d bytes", st, size)
		}

		// Staging again into the same folder (a restarted container keeps its emptyDir) works.
		if _, err := Stage(ctx, s, "run-a", local, "phase-1/pairs/"); err != nil {
			t.Fatalf("restaging: %v", err)
		}
		for _, missing := range []string{"phase-2/pairs/shard-0.jsonl", "phase-2/pairs/"} {
			_, err := Stage(ctx, s, "run-a", local, missing)
			if !errors.Is(err, ErrNotExist) || !strings.Contains(err.Error(), strings.TrimSuffix(missing, "/")) {
				t.Errorf("Stage(%s) = %v, want ErrNotExist naming it", missing, err)
			}
		}
		if _, err := Stage(ctx, s, "run-a", local, "../run-b/phase-1/pairs/shard-0.jsonl"); err == nil {
			t.Error("Stage accepted an input outside its prefix")
		}
	})
}

// stageOutputs are a label stage's outputs in a local folder: data and the done marker.
func stageOutputs(t *testing.T, shardSize int) (dir string, files map[string]string) {
	dir = t.TempDir()
	files = map[string]string{
		"phase-1/pairs/shard-0.jsonl":     strings.Repeat("a", shardSize),
		"phase-1/pairs/shard-1.jsonl":     strings.Repeat("b", shardSize+1),
		"phase-1/annotation/shard-0.json": `{"calls":3}`,
		"phase-1/label-0.done.json":       `{"stage":"label"}`,
	}
	writeLocal(t, dir, files)
	return dir, files
}

func TestPublish(t *testing.T) {
	forEach(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		dir, files := stageOutputs(t, 1000)
		for range 2 { // a second Publish of the same outputs (a retry after success) is harmless
			st, err := Publish(ctx, s, dir, "run-a", []string{"phase-1/pairs/", "phase-1/annotation/shard-0.json"}, "phase-1/label-0.done.json")
			if err != nil {
				t.Fatal(err)
			}
			if st.Objects != 4 {
				t.Errorf("Stats = %+v, want 4 objects", st)
			}
			for k, v := range files {
				if got, err := s.Read(ctx, "run-a/"+k); err != nil || string(got) != v {
					t.Fatalf("%s: %d bytes, %v", k, len(got), err)
				}
			}
		}
	})
}

// A reader that polls for the marker while Publish runs never finds the marker before every
// data object is whole, and never sees any data object partly written.
func TestPublishMarkerLastUnderConcurrentReader(t *testing.T) {
	forEach(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		dir, files := stageOutputs(t, 300<<10)
		// Hold every data upload at its most fragile point (bytes sent, write not committed)
		// until the reader has polled twice more; the marker is not held. So the reader surely
		// polls while Publish runs, and a marker written early would surely be seen.
		var polls atomic.Int64
		s.afterCopy = func(key string) {
			if strings.HasSuffix(key, ".done.json") {
				return
			}
			for target, deadline := polls.Load()+2, time.Now().Add(10*time.Second); polls.Load() < target && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		}
		reader := *s
		reader.afterCopy = nil

		var done atomic.Bool
		var sawMarker, sawData int
		check := func() {
			marked, err := reader.Exists(ctx, "run-a/phase-1/label-0.done.json")
			if err != nil {
				t.Error(err)
				return
			}
			for k, v := range files {
				got, err := reader.Read(ctx, "run-a/"+k)
				switch {
				case errors.Is(err, ErrNotExist) && marked:
					t.Errorf("marker present but %s missing", k)
				case errors.Is(err, ErrNotExist):
				case err != nil:
					t.Error(err)
				case string(got) != v:
					t.Errorf("read %s partly written: %d of %d bytes", k, len(got), len(v))
				default:
					sawData++
				}
			}
			polls.Add(1)
			if marked {
				sawMarker++
			}
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				check()
			}
			check()
		}()
		_, err := Publish(ctx, s, dir, "run-a", []string{"phase-1/"}, "phase-1/label-0.done.json")
		done.Store(true)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if sawMarker == 0 || polls.Load() < 3 || sawData == 0 {
			t.Fatalf("the reader polled %d times, saw the marker %d times and whole data %d times: the test did not overlap Publish", polls.Load(), sawMarker, sawData)
		}
		t.Logf("%d polls, marker seen in %d", polls.Load(), sawMarker)
	})
}

// A Publish killed mid-upload leaves no marker and no partial object; objects it did finish
// (or a stale upload from an older pod) are overwritten by the retry, which completes.
func TestPublishInterruptedThenRetried(t *testing.T) {
	forEach(t, func(t *testing.T, s *Store) {
		dir, files := stageOutputs(t, 200<<10)
		ctx, cancel := context.WithCancel(context.Background())
		var uploads atomic.Int32
		s.afterCopy = func(key string) {
			// The second data object is cut off mid-write; others may finish before.
			if !strings.HasSuffix(key, ".done.json") && uploads.Add(1) == 2 {
				cancel()
			}
		}
		_, err := Publish(ctx, s, dir, "run-a", []string{"phase-1/pairs/", "phase-1/annotation/"}, "phase-1/label-0.done.json")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted Publish = %v, want context.Canceled", err)
		}
		s.afterCopy = nil
		bg := context.Background()
		if ok, _ := s.Exists(bg, "run-a/phase-1/label-0.done.json"); ok {
			t.Fatal("an interrupted Publish wrote the done marker")
		}
		objs, err := s.List(bg, "run-a")
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) >= len(files)-1 {
			t.Fatalf("all %d data objects landed although the upload was cut: %v", len(objs), objs)
		}
		for _, o := range objs {
			got, _ := s.Read(bg, o.Key)
			if string(got) != files[strings.TrimPrefix(o.Key, "run-a/")] {
				t.Fatalf("%s is partly written (%d bytes)", o.Key, len(got))
			}
		}

		// An older pod's upload of different bytes, never marked: the retry overwrites it.
		if err := s.Write(bg, "run-a/phase-1/pairs/shard-0.jsonl", []byte("stale")); err != nil {
			t.Fatal(err)
		}
		if _, err := Publish(bg, s, dir, "run-a", []string{"phase-1/pairs/", "phase-1/annotation/"}, "phase-1/label-0.done.json"); err != nil {
			t.Fatalf("retry: %v", err)
		}
		for k, v := range files {
			if got, err := s.Read(bg, "run-a/"+k); err != nil || !bytes.Equal(got, []byte(v)) {
				t.Fatalf("after the retry %s: %d bytes, %v", k, len(got), err)
			}
		}
	})
}

func TestPublishRefusesBadInput(t *testing.T) {
	s := mustOpen(t, "file://"+t.TempDir(), Options{})
	dir, _ := stageOutputs(t, 10)
	ctx := context.Background()
	for _, tc := range []struct {
		files  []string
		marker string
		want   string
	}{
		{[]string{"phase-1/pairs/"}, "phase-1/nope.done.json", "Publish marker"},
		{[]string{"phase-1/pairs/"}, "", "Publish marker is empty"},
		{[]string{"phase-1/empty/"}, "phase-1/label-0.done.json", "no such file"},
		{[]string{"../x"}, "phase-1/label-0.done.json", "Publish file"},
		{[]string{"phase-1/missing.jsonl"}, "phase-1/label-0.done.json", "missing.jsonl"},
	} {
		_, err := Publish(ctx, s, dir, "run-a", tc.files, tc.marker)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Publish(%v, %q) = %v, want an error containing %q", tc.files, tc.marker, err, tc.want)
		}
		if ok, _ := s.Exists(ctx, "run-a/phase-1/label-0.done.json"); ok {
			t.Fatalf("Publish(%v) failed but wrote the marker", tc.files)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "phase-1", "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Publish(ctx, s, dir, "run-a", []string{"phase-1/empty/"}, "phase-1/label-0.done.json"); err == nil || !strings.Contains(err.Error(), "holds no files") {
		t.Errorf("Publish of an empty folder = %v, want 'holds no files'", err)
	}
}

// An object whose key climbs out of its folder (written by another tool) is refused before
// anything is downloaded, and nothing lands outside (or inside) the staging folder.
func TestStageRefusesEscapingKeys(t *testing.T) {
	forEach(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		if err := s.b.WriteAll(ctx, s.key("run-a/in/../../../escaped.txt"), []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
		// A good object beside it: nothing is staged when any key of the folder is bad.
		if err := s.Write(ctx, "run-a/in/ok.txt", []byte("ok")); err != nil {
			t.Fatal(err)
		}
		base := t.TempDir()
		local := filepath.Join(base, "scratch", "deep")
		_, err := Stage(ctx, s, "run-a", local, "in/")
		if err == nil || !strings.Contains(err.Error(), `".." segment`) {
			t.Fatalf("Stage of an escaping key = %v, want it refused", err)
		}
		filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				t.Errorf("Stage wrote %s", p)
			}
			return nil
		})
	})
}
