package pipeline

import "github.com/bpo-dev/bpo/api/v1alpha1"

// runSeed is the run's base random seed: spec.seed (0 included), default 1.
func runSeed(s *v1alpha1.AlignmentRunSpec) uint64 {
	if s.Seed == nil {
		return uint64(v1alpha1.DefaultSeed)
	}
	return uint64(*s.Seed)
}
