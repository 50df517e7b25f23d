package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/stage/contract"
)

// reportCmd is both the report stage (what the operator's report pod runs after the last
// phase, with the contract's flags like every stage: the controller always passes --config) and,
// without --config, the command that renders report.md again from a finished run's workspace
// folder, local or copied from a cluster's volume.
func reportCmd() *cobra.Command {
	c, _ := newReportCmd()
	return c
}

// newReportCmd returns the report command and the invocation its stage flags fill.
func newReportCmd() (*cobra.Command, *contract.Invocation) {
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
	}
	inv := contract.Register(c.Flags(), v1alpha1.StageReport)
	c.Flags().StringVarP(&manifest, "file", "f", "", "the run's manifest, for a workspace folder without its own run.yaml")
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		if !cmd.Flags().Changed(contract.FlagConfig) {
			if !cmd.Flags().Changed(contract.FlagWorkspace) {
				return fmt.Errorf("--workspace: name the run's workspace folder (<volume>/<run name>)")
			}
			return renderReport(cmd, inv.Workspace, manifest)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "bpo report: %s\n", engineLine())
		res, err := runReportStage(*inv)
		if err != nil {
			res = v1alpha1.StageResult{Stage: v1alpha1.StageReport, Phase: int32(inv.Phase), Message: err.Error()}
			_ = pipeline.ReportResult(res, inv.TerminationLog, nil)
			return err
		}
		return pipeline.ReportResult(res, inv.TerminationLog, cmd.OutOrStdout())
	}
	return c, inv
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

func runReportStage(inv contract.Invocation) (v1alpha1.StageResult, error) {
	if err := inv.ResolveIndex(os.LookupEnv); err != nil {
		return v1alpha1.StageResult{}, err
	}
	c := pipeline.StageCall{Stage: inv.Stage, Phase: inv.Phase, Index: inv.Index}
	return pipeline.RunPodStage(context.Background(), inv.Config, inv.Workspace, c, func(env *pipeline.Env) {
		env.DataDir = inv.DataDir
	})
}
