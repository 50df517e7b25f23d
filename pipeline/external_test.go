package pipeline

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// TestTrainExternal runs Env.TrainCommand in place of the Go trainer: the contract's flags and
// environment reach the command, its done marker is the result, and a failure or a missing
// marker is an error carrying the command's termination message.
func TestTrainExternal(t *testing.T) {
	e := makeRun("external").Env(t, t.TempDir())
	script := filepath.Join(t.TempDir(), "train.sh")
	// Records its arguments and environment next to the marker it writes (or fails when MODE says).
	body := `#!/bin/sh
while [ $# -gt 0 ]; do
  case $1 in --config) cfg=$2;; --workspace) ws=$2;; --phase) k=$2;; --termination-log) tl=$2;; esac; shift
done
if [ "$MODE" = fail ]; then echo '{"stage":"train","phase":1,"index":0,"message":"no GPU here"}' > "$tl"; exit 3; fi
grep -q "name: $BPO_RUN_NAME" "$cfg" || exit 4
d="$ws/$BPO_RUN_NAME/phase-$k"; mkdir -p "$d"
[ "$MODE" = nomarker ] && exit 0
echo "{\"stage\":\"train\",\"phase\":$k,\"index\":$JOB_COMPLETION_INDEX,\"steps\":7,\"message\":\"$BPO_RUN_UID\"}" > "$d/train-$JOB_COMPLETION_INDEX.done.json"
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	e.TrainCommand = []string{"sh", script}

	t.Setenv("MODE", "fail")
	if _, err := e.Train(1, 1); err == nil || !strings.Contains(err.Error(), "no GPU here") {
		t.Fatalf("failing command: want its termination message in the error, got %v", err)
	}
	t.Setenv("MODE", "nomarker")
	if _, err := e.Train(1, 1); err == nil || !strings.Contains(err.Error(), "no valid done marker") {
		t.Fatalf("command without a marker: want an error, got %v", err)
	}
	t.Setenv("MODE", "ok")
	r, err := e.Train(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stage != v1alpha1.StageTrain || r.Phase != 1 || r.Index != 1 || r.Steps != 7 || r.Message != e.Run.UID {
		t.Fatalf("result %+v: want the marker the command wrote (member 1, 7 steps, the run's uid)", r)
	}
	// A finished member is not run again: with MODE=fail the stored marker is still the result.
	t.Setenv("MODE", "fail")
	if again, err := e.Train(1, 1); err != nil || again.Steps != 7 {
		t.Fatalf("finished member rerun: %+v, %v", again, err)
	}
}

// TestRunManifest: the rendered run.yaml loads back as the same run.
func TestRunManifest(t *testing.T) {
	e := makeRun("manifest").Env(t, t.TempDir())
	doc, err := e.Run.RunManifest()
	if err != nil {
		t.Fatal(err)
	}
	ar, err := DecodeRun(doc)
	if err != nil {
		t.Fatal(err)
	}
	back, err := NewRun(ar)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(back)
	b, _ := json.Marshal(e.Run)
	if string(a) != string(b) {
		t.Fatalf("run.yaml does not round-trip:\n%s\n%s", a, b)
	}
}
