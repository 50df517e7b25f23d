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

// constRows is seeds rows of prompts values each equal to the seed's value.
func constRows(prompts int, vals ...float64) [][]float64 {
	out := make([][]float64, len(vals))
	for s, v := range vals {
		out[s] = make([]float64, prompts)
		for i := range out[s] {
			out[s][i] = v
		}
	}
	return out
}

func TestHierarchicalBootstrapHandChecked(t *testing.T) {
	zeros := func(seeds, prompts int) [][]float64 { return constRows(prompts, make([]float64, seeds)...) }
	for _, c := range []struct {
		name         string
		a, b         [][]float64
		diff, lo, hi float64
		tol          float64
	}{
		// Two seeds, no prompt variance, differences 0 and 1: a resample's mean is 0, 0.5 or 1
		// with probability 1/4, 1/2, 1/4, so the 2.5% and 97.5% percentiles are 0 and 1.
		{"two seeds 0 and 1", constRows(5, 0, 1), zeros(2, 5), 0.5, 0, 1, 0},
		// Every seed and prompt the same difference: nothing varies, the interval is a point.
		{"no variance", constRows(7, 0.3, 0.3, 0.3), zeros(3, 7), 0.3, 0.3, 0.3, 1e-12},
		// The baseline is subtracted prompt by prompt: equal arms give exactly 0.
		{"equal arms", [][]float64{{1, 5, -2}, {0, 3, 9}}, [][]float64{{1, 5, -2}, {0, 3, 9}}, 0, 0, 0, 0},
		// Three seeds with differences 0, 0, 3 and no prompt variance: the resampled mean is
		// 0 (prob 8/27), 1 (12/27), 2 (6/27) or 3 (1/27); 1/27 = 3.7% > 2.5%, so the 97.5%
		// percentile is 3 and the 2.5% percentile 0.
		{"three seeds 0 0 3", constRows(4, 0, 0, 3), zeros(3, 4), 1, 0, 3, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			ci, err := HierarchicalBootstrap(c.a, c.b, 4000, 0.95, 11)
			if err != nil {
				t.Fatal(err)
			}
			if !near(ci.Diff, c.diff, 1e-12) || !near(ci.Lo, c.lo, c.tol) || !near(ci.Hi, c.hi, c.tol) {
				t.Fatalf("got %+v, want %g [%g, %g]", ci, c.diff, c.lo, c.hi)
			}
			if len(c.a) > 1 && !ci.SeedsResampled {
				t.Fatal("SeedsResampled not set")
			}
		})
	}
	// The prompt-only bootstrap of the first case holds the seeds fixed: a point at 0.5.
	ci, _ := PairedBootstrap(constRows(5, 0, 1), constRows(5, 0, 0), 4000, 0.95, 11)
	if ci.Lo != 0.5 || ci.Hi != 0.5 || ci.SeedsResampled {
		t.Fatalf("prompt-only: %+v", ci)
	}
}

// TestHierarchicalBootstrapOneSeedIsPromptBootstrap: one seed leaves nothing to resample across
// seeds; the interval is the prompt bootstrap's, bit for bit.
func TestHierarchicalBootstrapOneSeedIsPromptBootstrap(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	a, b := synthetic(rng, 1, 150, 0.2, 1)
	h, err := HierarchicalBootstrap(a, b, 1000, 0.95, BootstrapSeed)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := PairedBootstrap(a, b, 1000, 0.95, BootstrapSeed)
	if h != p {
		t.Fatalf("one seed: hierarchical %+v, prompt-only %+v", h, p)
	}
}

// TestHierarchicalBootstrapSeedVariance: the case. Three seeds whose mean differences
// are 0.177, 0.067 and 0.119 with a little prompt noise: the prompt-only interval is narrow and
// excludes values the other seeds give; the hierarchical one covers the spread of the seeds.
func TestHierarchicalBootstrapSeedVariance(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 13))
	var a, b [][]float64
	for _, d := range []float64{0.177, 0.067, 0.119} {
		as, bs := make([]float64, 300), make([]float64, 300)
		for i := range as {
			bs[i] = rng.NormFloat64()
			as[i] = bs[i] + d + 0.05*rng.NormFloat64()
		}
		a, b = append(a, as), append(b, bs)
	}
	p, _ := PairedBootstrap(a, b, 2000, 0.95, BootstrapSeed)
	h, _ := HierarchicalBootstrap(a, b, 2000, 0.95, BootstrapSeed)
	if !near(h.Diff, p.Diff, 1e-12) {
		t.Fatalf("the point estimate does not depend on the resampling: %g vs %g", h.Diff, p.Diff)
	}
	if wp, wh := p.Hi-p.Lo, h.Hi-h.Lo; wh < 5*wp {
		t.Fatalf("hierarchical width %.4f, prompt-only %.4f: the seeds' spread is missing", wh, wp)
	}
	// Resampling 3 seeds, the extremes are all-lowest and all-highest (each 1/27 of the draws).
	if h.Lo > 0.075 || h.Hi < 0.17 {
		t.Fatalf("hierarchical %+v should reach the seeds' extremes 0.067 and 0.177", h)
	}
	// Deterministic given the RNG seed, different for another.
	again, _ := HierarchicalBootstrap(a, b, 2000, 0.95, BootstrapSeed)
	other, _ := HierarchicalBootstrap(a, b, 2000, 0.95, BootstrapSeed+1)
	if again != h || other == h {
		t.Fatalf("determinism: %+v %+v %+v", h, again, other)
	}
}

// TestHierarchicalBootstrapCoverage: differences whose seed means vary (sd 0.1 between seeds)
// on top of prompt noise. Over many synthetic experiments with 8 seeds, the hierarchical 95%
// interval covers the true mean far more often than the prompt-only one, which ignores the
// seeds' spread. (With few seeds a percentile bootstrap still undercovers somewhat.)
func TestHierarchicalBootstrapCoverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 15))
	const trials = 150
	hCover, pCover := 0, 0
	for i := range trials {
		var a, b [][]float64
		for range 8 {
			off := 0.1 * rng.NormFloat64()
			as, bs := make([]float64, 40), make([]float64, 40)
			for j := range as {
				bs[j] = rng.NormFloat64()
				as[j] = bs[j] + off + 0.3*rng.NormFloat64()
			}
			a, b = append(a, as), append(b, bs)
		}
		h, _ := HierarchicalBootstrap(a, b, 300, 0.95, uint64(i))
		p, _ := PairedBootstrap(a, b, 300, 0.95, uint64(i))
		if h.Lo <= 0 && 0 <= h.Hi {
			hCover++
		}
		if p.Lo <= 0 && 0 <= p.Hi {
			pCover++
		}
	}
	hr, pr := float64(hCover)/trials, float64(pCover)/trials
	t.Logf("coverage of the true difference: hierarchical %.3f, prompt-only %.3f", hr, pr)
	if hr < 0.85 || pr > 0.75 {
		t.Fatalf("coverage: hierarchical %.3f (want about 0.9), prompt-only %.3f (want well below)", hr, pr)
	}
}
