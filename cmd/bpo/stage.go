package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/stage/contract"
)

// stageCmd is one stage as the operator's pods run it (docs/stage-contract.md).
func stageCmd(stage string) *cobra.Command {
	c, _ := newStageCmd(stage)
	return c
}

// stageCommand is a stage's command and the invocation its flags fill.
type stageCommand struct {
	cmd *cobra.Command
	inv *contract.Invocation
}

// stageCommands are the commands of every stage of the contract, in its order: what the
// operator's pods run (the report's command also renders a finished workspace's report).
func stageCommands() []stageCommand {
	var out []stageCommand
	for _, stage := range contract.Stages {
		var sc stageCommand
		if stage == v1alpha1.StageReport {
			sc.cmd, sc.inv = newReportCmd()
		} else {
			sc.cmd, sc.inv = newStageCmd(stage)
		}
		out = append(out, sc)
	}
	return out
}

// newStageCmd returns the stage command and the invocation its flags fill: the contract's flags
// (contract.Register), the very ones the controller renders (contract.PodInvocation).
func newStageCmd(stage string) (*cobra.Command, *contract.Invocation) {
	c := &cobra.Command{
		Use:   stage,
		Short: fmt.Sprintf("Run the %s stage of one phase (what the operator's %s pods run)", stage, stage),
		Args:  cobra.NoArgs,
	}
	inv := contract.Register(c.Flags(), stage)
	c.RunE = func(cmd *cobra.Command, _ []string) error { return execStage(cmd, *inv) }
	return c, inv
}

// execStage runs one stage as a pod does and writes its StageResult (or, on error, a result
// carrying the message, which the controller shows in the run's Failed condition) to the
// termination log and stdout.
func execStage(cmd *cobra.Command, inv contract.Invocation) error {
	fmt.Fprintf(cmd.ErrOrStderr(), "bpo %s: %s\n", inv.Stage, engineLine())
	res, err := runStage(inv)
	if err != nil {
		res = v1alpha1.StageResult{Stage: inv.Stage, Phase: int32(inv.Phase), Index: int32(max(inv.Index, 0)), Message: err.Error()}
		_ = pipeline.ReportResult(res, inv.TerminationLog, nil)
		return err
	}
	return pipeline.ReportResult(res, inv.TerminationLog, cmd.OutOrStdout())
}

func runStage(inv contract.Invocation) (v1alpha1.StageResult, error) {
	if err := inv.ResolveIndex(os.LookupEnv); err != nil {
		return v1alpha1.StageResult{}, err
	}
	c := pipeline.StageCall{Stage: inv.Stage, Phase: inv.Phase, Index: inv.Index, Shards: inv.Shards}
	return pipeline.RunPodStage(context.Background(), inv.Config, inv.Workspace, c, func(env *pipeline.Env) {
		env.DataDir = inv.DataDir
		env.EvalSplit = inv.Split
		env.Log = os.Stderr // notes (e.g. how closely a sampler engine's log-probs agree) go to the pod's log
	})
}
