package pipeline

import (
	"io"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
)

// EncodeResult is contract.EncodeResult (at most v1alpha1.MaxStageResultBytes, only the message
// shortened) of r with secrets redacted from its message first (Redact).
func EncodeResult(r v1alpha1.StageResult) ([]byte, error) {
	r.Message = Redact(r.Message)
	return contract.EncodeResult(r)
}

// ReportResult writes r, its message redacted, to the termination-message file (if path is not
// empty) and as one line to out (contract.WriteResult).
func ReportResult(r v1alpha1.StageResult, terminationLog string, out io.Writer) error {
	r.Message = Redact(r.Message)
	return contract.WriteResult(r, terminationLog, out)
}
