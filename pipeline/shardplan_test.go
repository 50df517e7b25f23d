package pipeline

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// The defects these tests pin down (all on one workspace, as a cluster run's pods share it):
// lowering spec.sampler.parallelism between sample and label labelled half the rows; raising it
// on a retry sampled, labelled and trained rows twice; a truncated shard went unnoticed.

// phaseRows is the number of prompts of phase 1 (the test runs' budget: 16 pairs over 2 phases).
func phaseRows(t *testing.T, e *Env) int {
	t.Helper()
	p, err := e.PhasePrompts(1)
	if err != nil {
		t.Fatal(err)
	}
	return len(p)
}

// checkEveryRowOnce labels phase 1 with e's parallelism and checks that the pairs account for
// every prompt exactly once.
func checkEveryRowOnce(t *testing.T, e *Env) {
	t.Helper()
	var accounted int64
	for s := range e.Run.LabelShards() {
		r, err := e.Label(1, s, e.Run.LabelShards())
		if err != nil {
			t.Fatal(err)
		}
		accounted += r.Pairs + r.Ties + r.Identical
	}
	if want := int64(phaseRows(t, e)); accounted != want {
		t.Fatalf("label accounted for %d rows, the phase has %d prompts", accounted, want)
	}
	pairs, err := e.PhasePairs(1)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range pairs {
		if seen[p.Index] {
			t.Fatalf("prompt %d is paired twice", p.Index)
		}
		seen[p.Index] = true
	}
}

func TestLoweringSamplerParallelismKeepsEveryRow(t *testing.T) {
	vol := newVolume(t)
	two := makeRun("lower").Shards(2, 1).Env(t, vol)
	for s := range 2 {
		if _, err := two.Sample(1, s, 2); err != nil {
			t.Fatal(err)
		}
	}
	one := makeRun("lower").Shards(1, 1).Env(t, vol) // the user lowered the parallelism
	checkEveryRowOnce(t, one)
}

func TestRaisingSamplerParallelismOnRetryRepeatsNoRow(t *testing.T) {
	vol := newVolume(t)
	two := makeRun("raise").Shards(2, 1).Env(t, vol)
	if _, err := two.Sample(1, 0, 2); err != nil { // shard 1's pod failed
		t.Fatal(err)
	}
	four := makeRun("raise").Shards(4, 1).Env(t, vol) // the retry runs with 4 pods
	var samples int64
	for s := range 4 {
		r, err := four.Sample(1, s, 4)
		if err != nil {
			t.Fatal(err)
		}
		samples += r.Samples
	}
	per := int64(four.Run.Spec.Budget.SamplesPerPrompt)
	if want := int64(phaseRows(t, four)) * per; samples != want {
		t.Fatalf("the retry's pods report %d samples, want %d (each prompt once)", samples, want)
	}
	if _, err := os.Stat(four.WS.SamplesPath(1, 2)); !os.IsNotExist(err) {
		t.Fatalf("a third sample shard was written under the new count (%v)", err)
	}
	checkEveryRowOnce(t, four)
}

func TestLabelParallelismChangedOnRetry(t *testing.T) {
	vol := newVolume(t)
	e := makeRun("relabel").Shards(1, 3).Env(t, vol)
	if _, err := e.Sample(1, 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Label(1, 1, 3); err != nil { // shards 0 and 2 failed
		t.Fatal(err)
	}
	retry := makeRun("relabel").Shards(1, 2).Env(t, vol)
	checkEveryRowOnce(t, retry)
	if n, _ := retry.recordedShards(1, v1alpha1.StageLabel); n != 3 {
		t.Fatalf("recorded label shards %d, want the 3 the phase started with", n)
	}
}

func TestTruncatedShardIsRefused(t *testing.T) {
	vol := newVolume(t)
	e := makeRun("trunc").Shards(2, 1).Env(t, vol)
	for s := range 2 {
		if _, err := e.Sample(1, s, 2); err != nil {
			t.Fatal(err)
		}
	}
	path := e.WS.SamplesPath(1, 1)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimSuffix(string(data), "\n"), "\n")
	if err := os.WriteFile(path, []byte(strings.Join(lines[:len(lines)-1], "")), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = e.Label(1, 0, 1)
	if err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("labelling a truncated sample shard: err = %v, want one naming the truncation", err)
	}
}

func TestChangedPairsFileIsRefused(t *testing.T) {
	vol := newVolume(t)
	e := makeRun("pairs").Env(t, vol)
	if _, err := e.Sample(1, 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Label(1, 0, 1); err != nil {
		t.Fatal(err)
	}
	path := e.WS.PairsPath(1, 0)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(data, data[:strings.IndexByte(string(data), '\n')+1]...), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PhasePairs(1); err == nil || !strings.Contains(err.Error(), "changed after labelling") {
		t.Fatalf("reading a pairs file with a repeated line: err = %v", err)
	}
}

// Workspace files are readable by the other uids of the pod's fsGroup (0644, not CreateTemp's
// 0600), and a huge prompt's error quotes only its start.
func TestWorkspaceFilesReadableAndMessagesBounded(t *testing.T) {
	vol := newVolume(t)
	e := makeRun("modes").Env(t, vol)
	if _, err := e.Sample(1, 0, 1); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{e.WS.SamplesPath(1, 0), e.WS.DonePath(1, v1alpha1.StageSample, 0), e.WS.ShardPlanPath(1, v1alpha1.StageSample)} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o044 != 0o044 {
			t.Errorf("%s has mode %v: group and others cannot read it", p, st.Mode().Perm())
		}
	}
	if q := quoteStart(strings.Repeat("é", 1<<20), 80); len(q) > 84 || !strings.HasSuffix(q, "…") {
		t.Errorf("quoteStart of a 2 MiB prompt is %d bytes", len(q))
	}
}

// A killed stage's temp files are swept when a stage next opens the workspace, once they are old
// enough not to belong to a write in progress.
func TestStaleTempFilesSwept(t *testing.T) {
	vol := newVolume(t)
	e := makeRun("sweep").Env(t, vol)
	dir := e.WS.PhaseDir(1)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, fresh := dir+"/.samples.jsonl.tmp-123", dir+"/.pairs.jsonl.tmp-456"
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	makeRun("sweep").Env(t, vol) // opens the workspace again
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("the 2-hour-old temp file is still there (%v)", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a fresh temp file (a write in progress) was removed: %v", err)
	}
}
