package stats

import (
	"math/rand/v2"
	"testing"
)

// synthetic makes paired outcomes: baseline b ~ N(0, 1) per prompt (prompt difficulty shared by
// both arms), arm a = b + diff + N(0, noise).
func synthetic(rng *rand.Rand, seeds, prompts int, diff, noise float64) (a, b [][]float64) {
	for range seeds {
		as, bs := make([]float64, prompts), make([]float64, prompts)
		for i := range bs {
			bs[i] = rng.NormFloat64()
			as[i] = bs[i] + diff + noise*rng.NormFloat64()
		}
		a, b = append(a, as), append(b, bs)
	}
	return a, b
}

func TestPairedBootstrapKnownDifference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	a, b := synthetic(rng, 3, 200, 0.3, 0.5)
	ci, err := PairedBootstrap(a, b, 2000, 0.95, BootstrapSeed)
	if err != nil {
		t.Fatal(err)
	}
	if !(ci.Lo < 0.3 && 0.3 < ci.Hi) || !ci.Excludes0() || ci.Lo > ci.Diff || ci.Diff > ci.Hi {
		t.Fatalf("95%% CI %+v should cover the true difference 0.3 and exclude 0", ci)
	}
	// The standard error of the mean difference is 0.5/sqrt(600) = 0.020: the interval is about ±0.04.
	if w := ci.Hi - ci.Lo; w < 0.05 || w > 0.11 {
		t.Fatalf("CI width %.3f, want about 0.08", w)
	}
	if ci.Seeds != 3 || ci.Prompts != 200 || ci.Resamples != 2000 {
		t.Fatalf("metadata: %+v", ci)
	}
	// Deterministic: the same inputs give the same interval bit for bit.
	again, _ := PairedBootstrap(a, b, 2000, 0.95, BootstrapSeed)
	if again != ci {
		t.Fatalf("not deterministic: %+v vs %+v", ci, again)
	}
	other, _ := PairedBootstrap(a, b, 2000, 0.95, BootstrapSeed+1)
	if other == ci {
		t.Fatal("the RNG seed is ignored")
	}
}

func TestPairedBootstrapUsesThePairing(t *testing.T) {
	// Prompts vary a lot, the arm is exactly 0.1 better on every prompt: a paired interval is
	// [0.1, 0.1]; an unpaired one would be about ±0.2 wide.
	rng := rand.New(rand.NewPCG(5, 6))
	a, b := synthetic(rng, 2, 100, 0.1, 0)
	ci, err := PairedBootstrap(a, b, 500, 0.95, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !near(ci.Lo, 0.1, 1e-9) || !near(ci.Hi, 0.1, 1e-9) || !near(ci.Diff, 0.1, 1e-9) {
		t.Fatalf("paired CI %+v, want exactly 0.1", ci)
	}
}

func TestPairedBootstrapCoverage(t *testing.T) {
	// Over many synthetic experiments with a known difference, the 95% interval covers it
	// about 95% of the time (percentile bootstrap with 2 seeds x 60 prompts).
	rng := rand.New(rand.NewPCG(7, 8))
	const trials = 200
	covered := 0
	for i := range trials {
		a, b := synthetic(rng, 2, 60, -0.2, 1)
		ci, err := PairedBootstrap(a, b, 400, 0.95, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		if ci.Lo <= -0.2 && -0.2 <= ci.Hi {
			covered++
		}
	}
	if rate := float64(covered) / trials; rate < 0.89 || rate > 0.99 {
		t.Fatalf("coverage %.3f, want about 0.95", rate)
	}
}

func TestPairedBootstrapErrors(t *testing.T) {
	if _, err := PairedBootstrap([][]float64{{1, 2}}, [][]float64{{1}}, 10, 0.95, 1); err == nil {
		t.Fatal("different prompt counts must be an error")
	}
	if _, err := PairedBootstrap([][]float64{{1}}, nil, 10, 0.95, 1); err == nil {
		t.Fatal("different seed counts must be an error")
	}
	if _, err := PairedBootstrap([][]float64{{1}}, [][]float64{{1}}, 0, 0.95, 1); err == nil {
		t.Fatal("zero resamples must be an error")
	}
}
