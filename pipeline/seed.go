package pipeline

import "github.com/bpo-dev/bpo/api/v1alpha1"

// runSeed is the run's base random seed (spec.seed, default 1).
func runSeed(s *v1alpha1.AlignmentRunSpec) uint64 {
	if s.Seed <= 0 {
		return 1
	}
	return uint64(s.Seed)
}
