package pipeline

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"unicode/utf8"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// EncodeResult marshals r to at most v1alpha1.MaxStageResultBytes. The message
// is the only free-form field, so it is the one shortened when the document
// would not fit; the numbers the controller reads are never dropped. Secrets are
// redacted from the message first (Redact).
func EncodeResult(r v1alpha1.StageResult) ([]byte, error) {
	r.Message = Redact(r.Message)
	data, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	for len(data) > v1alpha1.MaxStageResultBytes && r.Message != "" {
		over := len(data) - v1alpha1.MaxStageResultBytes
		keep := len(r.Message) - over - len("…")
		if keep < 0 {
			keep = 0
		}
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
	if len(data) > v1alpha1.MaxStageResultBytes {
		return nil, fmt.Errorf("stage result is %d bytes, over the %d-byte termination-message limit", len(data), v1alpha1.MaxStageResultBytes)
	}
	return data, nil
}

// ReportResult writes r to the termination-message file (if path is not empty)
// and as one line to out.
func ReportResult(r v1alpha1.StageResult, terminationLog string, out io.Writer) error {
	data, err := EncodeResult(r)
	if err != nil {
		return err
	}
	if terminationLog != "" {
		if err := os.WriteFile(terminationLog, data, 0o644); err != nil {
			return fmt.Errorf("termination log %s: %w", terminationLog, err)
		}
	}
	if out != nil {
		_, err = fmt.Fprintf(out, "%s\n", data)
	}
	return err
}
