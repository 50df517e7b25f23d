package pipeline

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestCorruptSampleShard: a sample shard damaged after sampling stops the label stage with an
// error that names the file and the fix, whatever the damage; deleting the file and its done
// marker, as the error says, samples it again and the phase labels every prompt once.
func TestCorruptSampleShard(t *testing.T) {
	vol := newVolume(t)
	for name, damage := range map[string]func([]byte) []byte{
		// cut at a line boundary: every remaining line is valid JSON, only the count is off
		"last row dropped": func(b []byte) []byte {
			b = bytes.TrimSuffix(b, []byte("\n"))
			return b[:bytes.LastIndexByte(b, '\n')+1]
		},
		"cut mid-line": func(b []byte) []byte { return b[:len(b)/2] },
		"garbled":      func(b []byte) []byte { return bytes.Replace(b, []byte(`"prompt"`), []byte(`"pr\x00mpt"`), 1) },
	} {
		t.Run(name, func(t *testing.T) {
			e := makeRun("corrupt-"+strings.ReplaceAll(name, " ", "-")).Shards(2, 1).Env(t, vol)
			for s := range 2 {
				if _, err := e.Sample(1, s, 2); err != nil {
					t.Fatal(err)
				}
			}
			path := e.WS.SamplesPath(1, 1)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, damage(b), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = e.Label(1, 0, 1)
			marker := e.WS.DonePath(1, "sample", 1)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "delete it and its done marker "+marker) {
				t.Fatalf("label over a damaged shard: %v\nwant an error naming %s and the fix", err, path)
			}
			if _, done := e.Done(1, "label", 0); done {
				t.Fatal("the failed label shard left a done marker")
			}

			// the fix the error names
			for _, p := range []string{path, marker} {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := e.Sample(1, 1, 2); err != nil {
				t.Fatal(err)
			}
			r, err := e.Label(1, 0, 1)
			if err != nil {
				t.Fatalf("label after resampling: %v", err)
			}
			if got, want := int(r.Pairs+r.Ties+r.Identical), e.Run.PairsPerPhase(); got != want {
				t.Errorf("label accounts for %d sample rows, the phase has %d prompts", got, want)
			}
		})
	}
}
