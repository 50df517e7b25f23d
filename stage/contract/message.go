package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// MaxResultBytes bounds the StageResult document: the kubelet's termination-message limit.
const MaxResultBytes = v1alpha1.MaxStageResultBytes

// MaxCheckpointBytes bounds a result's checkpoint and report paths: the MaxLength of
// status.latestCheckpoint, status.phaseResults[].checkpoint and status.report, which they are
// copied into.
const MaxCheckpointBytes = 1024

// EncodeResult marshals r to at most MaxResultBytes. The message is the only free-form field, so
// it is the one shortened when the document would not fit; the numbers the controller reads are
// never dropped. The caller redacts the message first (pipeline.Redact).
func EncodeResult(r v1alpha1.StageResult) ([]byte, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	for len(data) > MaxResultBytes && r.Message != "" {
		over := len(data) - MaxResultBytes
		keep := max(len(r.Message)-over-len("…"), 0)
		msg := r.Message[:keep]
		for !utf8.ValidString(msg) { // never cut a rune in half
			msg = msg[:len(msg)-1]
		}
		r.Message = msg + "…"
		if keep == 0 {
			r.Message = ""
		}
		if data, err = json.Marshal(r); err != nil {
			return nil, err
		}
	}
	if len(data) > MaxResultBytes {
		return nil, fmt.Errorf("stage result is %d bytes, over the %d-byte termination-message limit", len(data), MaxResultBytes)
	}
	return data, nil
}

// WriteResult writes r (EncodeResult) to the termination-log file, unless path is empty, and as
// one line to out, unless out is nil: the stage's last line of stdout.
func WriteResult(r v1alpha1.StageResult, path string, out io.Writer) error {
	data, err := EncodeResult(r)
	if err != nil {
		return err
	}
	if path != "" {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return fmt.Errorf("termination log %s: %w", path, err)
		}
	}
	if out != nil {
		_, err = fmt.Fprintf(out, "%s\n", data)
	}
	return err
}

// ReadResult reads a succeeded pod's termination message: one JSON StageResult object that
// status can hold (CheckResult).
func ReadResult(msg string) (v1alpha1.StageResult, error) {
	var r v1alpha1.StageResult
	msg = strings.TrimSpace(msg)
	// Only a JSON object is a StageResult: "null" would unmarshal to an all-zero result.
	if !strings.HasPrefix(msg, "{") {
		return r, errors.New("not a JSON object")
	}
	if err := json.Unmarshal([]byte(msg), &r); err != nil {
		return r, err
	}
	return r, CheckResult(&r)
}

// CheckResult reports a StageResult that status could not hold: folded as it is, it would make
// every status write fail (a field over its schema bound) while the run moved on.
func CheckResult(r *v1alpha1.StageResult) error {
	switch {
	case len(r.Checkpoint) > MaxCheckpointBytes:
		return fmt.Errorf("checkpoint is %d bytes, over %d", len(r.Checkpoint), MaxCheckpointBytes)
	case len(r.Report) > MaxCheckpointBytes:
		return fmt.Errorf("report is %d bytes, over %d", len(r.Report), MaxCheckpointBytes)
	case r.Samples < 0 || r.Pairs < 0 || r.Identical < 0 || r.Ties < 0 || r.Steps < 0 ||
		(r.GuardDecided != nil && *r.GuardDecided < 0):
		return fmt.Errorf("negative count in %+v", *r)
	}
	return nil
}

// FailureText is what a failed pod's termination message says: the message of its StageResult,
// or the text itself (a log tail, with FallbackToLogsOnError); empty when it says nothing.
func FailureText(msg string) string {
	msg = strings.TrimSpace(msg)
	var r v1alpha1.StageResult
	if json.Unmarshal([]byte(msg), &r) == nil && r.Message != "" {
		return r.Message
	}
	return msg
}
