package experiment

import (
	"math"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/experiment/stats"
)

func TestChecksUnequalOptimizerSteps(t *testing.T) {
	arm := func(name string, steps ...float64) ArmStats {
		return ArmStats{Arm: name, OptimizerSteps: stats.MeanStd(steps), runs: []*expRun{{RunRecord: &RunRecord{}}}}
	}
	for _, c := range []struct {
		name string
		arms []ArmStats
		want string // "" : no note
	}{
		{"equal", []ArmStats{arm("a", 64, 64), arm("b", 64, 64)}, ""},
		{"one differs", []ArmStats{arm("a", 60, 60), arm("b", 64, 64), arm("c", 64, 64)}, "different numbers of optimizer steps per member (mean over seeds; 60.0: a; 64.0: b, c)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep := &Report{Arms: c.arms, CommonKL: math.NaN()}
			rep.addChecks()
			got := ""
			for _, s := range rep.Checks {
				if strings.Contains(s, "optimizer steps") {
					got = s
				}
			}
			if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
				t.Fatalf("checks %q, want one containing %q", rep.Checks, c.want)
			}
		})
	}
}
