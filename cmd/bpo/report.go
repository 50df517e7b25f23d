package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
)

// reportCmd is both the report stage (what the operator's report pod runs after the last
// phase: --config, the volume as --workspace, --phase, --termination-log, like every stage)
// and, without --config, the command that renders report.md again from a finished run's
// workspace folder, local or copied from a cluster's volume.
func reportCmd() *cobra.Command {
	var f stageFlags
	var manifest string
	c := &cobra.Command{
		Use:   "report --workspace RUN-FOLDER",
		Short: "Write report.md, plots and sample completions from a finished run's workspace folder",
		Long: `report reads a finished run's workspace folder (<volume>/<run name>: the stages' results, the
evaluations, and the run's manifest run.yaml that every run keeps there) and writes report.md and
the plots into it, as the report stage of a run does. It trains and samples nothing.

With --config it is the report stage itself, as the operator runs it (--workspace is then the
volume root, as for every stage).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.config == "" {
				return renderReport(cmd, f.workspace, manifest)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "bpo report: %s\n", engineLine())
			res, err := runReportStage(f)
			if err != nil {
				res = v1alpha1.StageResult{Stage: v1alpha1.StageReport, Phase: int32(f.phase), Message: err.Error()}
				_ = pipeline.ReportResult(res, f.termLog, nil)
				return err
			}
			return pipeline.ReportResult(res, f.termLog, cmd.OutOrStdout())
		},
	}
	c.Flags().StringVar(&f.workspace, "workspace", "", "the run's workspace folder (<volume>/<run name>); with --config, the volume root")
	c.Flags().StringVarP(&manifest, "file", "f", "", "the run's manifest, for a workspace folder without its own run.yaml")
	c.Flags().StringVar(&f.config, "config", "", "report stage: the AlignmentRun manifest the operator mounts")
	c.Flags().IntVar(&f.phase, "phase", 0, "report stage: the last phase (spec.trustRegion.phases)")
	c.Flags().StringVar(&f.dataDir, "data-dir", "/etc/bpo/data", "report stage: where a ConfigMap data source is mounted")
	c.Flags().StringVar(&f.termLog, "termination-log", "", "report stage: file the JSON stage result is written to")
	// The evaluator's template args reach the report pod too (it runs with spec.evaluator's
	// template); --split is the one eval flag they may carry, and the report has no use for it.
	c.Flags().StringVar(&f.split, "split", "eval", "report stage: accepted for the evaluator's args, unused")
	_ = c.Flags().MarkHidden("split")
	_ = c.MarkFlagRequired("workspace")
	return c
}

func renderReport(cmd *cobra.Command, dir, manifest string) error {
	var env *pipeline.Env
	var err error
	if manifest != "" {
		env, err = pipeline.OpenEnv(manifest, filepath.Dir(filepath.Clean(dir)))
	} else {
		env, err = pipeline.OpenRunFolder(dir)
	}
	if err != nil {
		return err
	}
	rep, err := env.RenderReport()
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s\nreport: %s\n", rep.Summary, filepath.Join(env.WS.Root, pipeline.ReportFile))
	return nil
}

func runReportStage(f stageFlags) (v1alpha1.StageResult, error) {
	env, err := pipeline.OpenEnv(f.config, f.workspace)
	if err != nil {
		return v1alpha1.StageResult{}, err
	}
	if f.phase != env.Run.Phases() {
		return v1alpha1.StageResult{}, errors.New("--phase must be the last phase, spec.trustRegion.phases: the report follows the last evaluation")
	}
	env.DataDir = f.dataDir
	return env.Report()
}
