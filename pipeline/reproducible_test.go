package pipeline

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunIsReproducible: the same run from the same inputs, in two workspaces, writes the
// same bytes: samples, pairs, checkpoints, optimizer state and evaluations. (Only the
// stage markers and the report, which record wall times, may differ.)
func TestRunIsReproducible(t *testing.T) {
	var roots []string
	for range 2 {
		e := makeRun("twice").Env(t, newVolume(t))
		if _, err := e.RunAll(RunHooks{}); err != nil {
			t.Fatal(err)
		}
		roots = append(roots, e.WS.Root)
	}
	n := 0
	err := filepath.Walk(roots[0], func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || strings.HasSuffix(p, ".done.json") || strings.HasSuffix(p, "timing.json") ||
			filepath.Ext(p) == ".md" || filepath.Ext(p) == ".png" {
			return err
		}
		rel, _ := filepath.Rel(roots[0], p)
		a, _ := os.ReadFile(p)
		b, err := os.ReadFile(filepath.Join(roots[1], rel))
		if err != nil {
			return err
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two identical runs", rel)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 20 {
		t.Fatalf("compared only %d files", n)
	}
}
