package pipeline

import "github.com/bpo-dev/bpo/api/v1alpha1"

// runSeed is the run's base random seed.
func runSeed(s *v1alpha1.AlignmentRunSpec) uint64 { return 1 }
