package pipeline

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
)

// trainExternal runs Env.TrainCommand as the operator's train pod for member m of phase k would
// run it (docs/stage-contract.md, contract.Invocation.CommandLine): the command, then the
// contract's flags (--config, a run.yaml rendered from e.Run in a scratch folder; --workspace;
// --phase; --termination-log), with
// JOB_COMPLETION_INDEX, BPO_RUN_NAME and BPO_RUN_UID. The member's done marker, which the command
// writes last, is its result, so a finished member is skipped like the Go stage's.
func (e *Env) trainExternal(k, m int) (v1alpha1.StageResult, error) {
	if r, done := e.Done(k, v1alpha1.StageTrain, m); done {
		return r, nil
	}
	tmp, err := os.MkdirTemp("", "bpo-train-command-")
	if err != nil {
		return v1alpha1.StageResult{}, err
	}
	defer os.RemoveAll(tmp)
	manifest, err := e.Run.RunManifest()
	if err != nil {
		return v1alpha1.StageResult{}, err
	}
	config, termLog := filepath.Join(tmp, "run.yaml"), filepath.Join(tmp, "termination-log")
	if err := os.WriteFile(config, manifest, 0o644); err != nil {
		return v1alpha1.StageResult{}, err
	}
	inv := contract.Invocation{Stage: v1alpha1.StageTrain, Config: config, Workspace: e.VolumeRoot, Phase: k, Index: -1, TerminationLog: termLog}
	name, args := inv.CommandLine(e.TrainCommand, nil)
	cmd := exec.Command(name[0], append(name[1:], args...)...)
	cmd.Env = append(os.Environ(), contract.EnvCompletionIndex+"="+strconv.Itoa(m), contract.EnvRunName+"="+e.Run.Name, contract.EnvRunUID+"="+e.Run.UID)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if e.Log != nil {
		cmd.Stdout, cmd.Stderr = e.Log, e.Log
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(string(readTail(termLog)))
		if msg == "" {
			msg = strings.TrimSpace(stderr.String())
		}
		if msg != "" {
			msg = ": " + Redact(msg)
		}
		return v1alpha1.StageResult{}, fmt.Errorf("phase %d train %d: %s: %v%s", k, m, strings.Join(e.TrainCommand, " "), err, msg)
	}
	r, done := e.Done(k, v1alpha1.StageTrain, m)
	if !done {
		return r, fmt.Errorf("phase %d train %d: %s exited 0 but wrote no valid done marker %s", k, m, strings.Join(e.TrainCommand, " "), e.WS.DonePath(k, v1alpha1.StageTrain, m))
	}
	return r, nil
}

// readTail is the file's content, at most its last 4 KiB (a termination message is no longer).
func readTail(path string) []byte {
	data, _ := os.ReadFile(path)
	return data[max(len(data)-v1alpha1.MaxStageResultBytes, 0):]
}
