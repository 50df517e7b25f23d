package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
)

type stageFlags struct {
	config, workspace, dataDir, termLog, split string
	phase, shards, index                       int
}

// stageCmd is one stage as the operator's pods run it (docs/design.md, "The stage contract").
func stageCmd(stage string) *cobra.Command {
	var f stageFlags
	c := &cobra.Command{
		Use:   stage,
		Short: fmt.Sprintf("Run the %s stage of one phase (what the operator's %s pods run)", stage, stage),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.ErrOrStderr(), "bpo %s: %s\n", stage, engineLine())
			res, err := runStage(stage, f)
			if err != nil {
				// The controller shows this message in the run's Failed condition.
				res = v1alpha1.StageResult{Stage: stage, Phase: int32(f.phase), Index: int32(max(f.index, 0)), Message: err.Error()}
				_ = pipeline.ReportResult(res, f.termLog, nil)
				return err
			}
			return pipeline.ReportResult(res, f.termLog, cmd.OutOrStdout())
		},
	}
	c.Flags().StringVar(&f.config, "config", "/etc/bpo/run.yaml", "the AlignmentRun manifest")
	c.Flags().StringVar(&f.workspace, "workspace", "/workspace", "root of the workspace volume")
	c.Flags().StringVar(&f.dataDir, "data-dir", "/etc/bpo/data", "where a ConfigMap data source is mounted")
	c.Flags().StringVar(&f.termLog, "termination-log", "/dev/termination-log", "file the JSON stage result is written to (empty: stdout only)")
	c.Flags().IntVar(&f.phase, "phase", 0, "data-collection phase k, 1-based (eval also takes 0: the initial model)")
	c.Flags().IntVar(&f.shards, "shards", 1, "number of shards (sample, label)")
	c.Flags().IntVar(&f.index, "index", -1, "shard (sample, label) or ensemble member (train); default $JOB_COMPLETION_INDEX")
	if stage == "eval" {
		c.Flags().StringVar(&f.split, "split", "eval", "held-out split: eval or validation")
	}
	return c
}

func runStage(stage string, f stageFlags) (v1alpha1.StageResult, error) {
	var none v1alpha1.StageResult
	if f.index < 0 && stage != "eval" {
		v, ok := os.LookupEnv("JOB_COMPLETION_INDEX")
		if !ok {
			return none, errors.New("--index is not set and JOB_COMPLETION_INDEX is not in the environment")
		}
		i, err := strconv.Atoi(v)
		if err != nil {
			return none, fmt.Errorf("JOB_COMPLETION_INDEX=%q is not an integer", v)
		}
		f.index = i
	}
	if f.phase < 0 || (f.phase == 0 && stage != "eval") {
		return none, fmt.Errorf("--phase must be >= 1 (got %d)", f.phase)
	}
	env, err := pipeline.OpenEnv(f.config, f.workspace)
	if err != nil {
		return none, err
	}
	if f.phase > env.Run.Phases() {
		return none, fmt.Errorf("--phase %d is beyond spec.trustRegion.phases (%d)", f.phase, env.Run.Phases())
	}
	env.DataDir = f.dataDir
	env.EvalSplit = f.split
	switch stage {
	case "sample":
		return env.Sample(f.phase, f.index, f.shards)
	case "label":
		return env.Label(f.phase, f.index, f.shards)
	case "train":
		return env.Train(f.phase, f.index)
	case "eval":
		return env.Eval(f.phase)
	}
	return none, fmt.Errorf("unknown stage %q", stage)
}
