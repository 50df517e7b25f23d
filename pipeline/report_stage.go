package pipeline

import (
	"fmt"
	"path/filepath"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// ReportFile is the report's name in the run's workspace folder.
const ReportFile = "report.md"

// Report is the report stage, after the last phase: it reads every phase's summary and the
// evaluations back from the workspace and writes report.md, the plots and the side-by-side
// completions (WriteReport). Its result names the report and carries the summary lines.
func (e *Env) Report() (v1alpha1.StageResult, error) {
	return e.once(e.Run.Phases(), v1alpha1.StageReport, -1, func(r *v1alpha1.StageResult) error {
		rep, err := e.RenderReport()
		if err != nil {
			return err
		}
		r.Report = e.WS.Rel(filepath.Join(e.WS.Root, ReportFile))
		r.Message = rep.Summary
		return nil
	})
}

// RenderReport writes the report of a finished workspace (again): what the report stage and
// `bpo report` do.
func (e *Env) RenderReport() (*Report, error) {
	sums, err := e.Summaries()
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return e.WriteReport(sums)
}
