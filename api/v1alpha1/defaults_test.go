package v1alpha1

import (
	"fmt"
	"testing"
)

// TestStagesWithOutput: spec.output adds the export stage at the end of the last phase (after
// the report), and with everyPhase at the end of every phase but the baseline.
func TestStagesWithOutput(t *testing.T) {
	for _, c := range []struct {
		output     *OutputSpec
		k          int32
		wantStages string
	}{
		{nil, 2, "[sample label train eval report]"},
		{&OutputSpec{URI: "s3://b"}, 0, "[eval]"},
		{&OutputSpec{URI: "s3://b"}, 1, "[sample label train]"},
		{&OutputSpec{URI: "s3://b"}, 2, "[sample label train eval report export]"},
		{&OutputSpec{URI: "s3://b", EveryPhase: true}, 0, "[eval]"},
		{&OutputSpec{URI: "s3://b", EveryPhase: true}, 1, "[sample label train export]"},
		{&OutputSpec{URI: "s3://b", EveryPhase: true}, 2, "[sample label train eval report export]"},
	} {
		r := &AlignmentRun{}
		r.Spec.TrustRegion.Phases = 2
		r.Spec.Output = c.output
		r.SetDefaults()
		if got := fmt.Sprint(r.Spec.Stages(c.k)); got != c.wantStages {
			t.Errorf("output %+v phase %d: stages %s, want %s", c.output, c.k, got, c.wantStages)
		}
	}
}
