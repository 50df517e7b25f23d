package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/utils/ptr"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
)

// TestStageCommandsParseTheControllersInvocation round-trips every stage's pod command line, as
// the controller builds it (`bpo` + contract.PodInvocation's args, controllers.buildJob), through
// the stage commands' own flag parsing: each stage command must read back exactly what the
// controller meant, with the contract's defaults for the flags it leaves out.
func TestStageCommandsParseTheControllersInvocation(t *testing.T) {
	plain := &v1alpha1.AlignmentRun{}
	plain.Spec.TrustRegion.Phases = 3
	plain.SetDefaults()
	wide := plain.DeepCopy()
	wide.Spec.Sampler.Parallelism, wide.Spec.Labeler.Parallelism = ptr.To(int32(4)), ptr.To(int32(3))
	wide.Spec.Ensemble.Members = 5
	wide.Spec.Data.ConfigMap = &v1alpha1.ConfigMapDataSource{Name: "prompts", PromptsKey: "p.jsonl", EvalKey: "e.jsonl"}
	wide.Spec.Output = &v1alpha1.OutputSpec{URI: "s3://models/runs", EveryPhase: true}

	root := &cobra.Command{Use: "bpo"}
	parsed := map[string]*contract.Invocation{}
	for _, sc := range stageCommands() {
		root.AddCommand(sc.cmd)
		parsed[sc.cmd.Name()] = sc.inv
	}
	if len(parsed) != len(contract.Stages) {
		t.Fatalf("bpo has stage commands %v, the contract names %v", parsed, contract.Stages)
	}
	n := 0
	for _, run := range []*v1alpha1.AlignmentRun{plain, wide} {
		for _, stage := range contract.Stages {
			for k := int32(contract.FirstPhase(stage)); k <= run.Spec.TrustRegion.Phases; k++ {
				everyPhase := run.Spec.ExportsEveryPhase()
				if contract.CheckPhase(stage, int(k), int(run.Spec.TrustRegion.Phases), everyPhase) != nil {
					continue // the report (and without everyPhase the export) runs in the last phase only
				}
				built := contract.PodInvocation(&run.Spec, stage, k)
				argv := append([]string{stage}, built.Args()...)
				cmd, rest, err := root.Find(argv)
				if err != nil || cmd.Name() != stage {
					t.Fatalf("bpo %v: found %v, %v", argv, cmd, err)
				}
				resetFlags(cmd)
				if err := cmd.ParseFlags(rest); err != nil {
					t.Fatalf("bpo %v: %v", argv, err)
				}
				if d := cmp.Diff(built.WithDefaults(), *parsed[stage]); d != "" {
					t.Errorf("bpo %v (-controller +stage command):\n%s", argv, d)
				}
				n++
			}
		}
	}
	// sample, label and train in phases 1..3, eval in 0..3, report in 3; for two specs; export
	// in 3 (plain) and in 1..3 (wide: everyPhase).
	if want := 2*(3*3+4+1) + 1 + 3; n != want {
		t.Fatalf("round-tripped %d invocations, want %d", n, want)
	}
}

// resetFlags puts every flag of c back to its default, as a fresh process would see it.
func resetFlags(c *cobra.Command) {
	c.Flags().VisitAll(func(f *pflag.Flag) {
		_ = f.Value.Set(f.DefValue)
		f.Changed = false
	})
}
