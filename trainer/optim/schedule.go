package optim

import (
	"fmt"
	"math"
)

// Schedule is the learning-rate schedule after warm-up (see Config.LRAt).
type Schedule string

const (
	// Linear decays the rate linearly to the floor at TotalSteps (the default).
	Linear Schedule = "linear"
	// Cosine decays the rate along a half cosine to the floor at TotalSteps.
	Cosine Schedule = "cosine"
	// Constant keeps the rate at LR after warm-up.
	Constant Schedule = "constant"
)

// LRAt is the learning rate of the step taken after s previous steps (s = 0 is the first
// step). With floor = LR·MinLRRatio, W = Warmup and T = TotalSteps:
//   - warm-up, s < W: LR·(s+1)/W, so the last warm-up step runs at LR;
//   - Constant: LR;
//   - Linear: floor + (LR−floor)·(T−s)/(T−W);
//   - Cosine: floor + (LR−floor)·(1+cos(π·(s−W)/(T−W)))/2;
//   - s ≥ T: floor.
//
// With MinLRRatio 0 and no warm-up, Linear is Hugging Face's get_linear_schedule_with_warmup
// with T the number of steps, which the train stage uses (DefaultConfig): the floor (zero)
// comes one step after the last. To take the last of n steps at the floor, pass T = n−1.
func (c Config) LRAt(s int) float64 {
	if s < c.Warmup {
		return c.LR * float64(s+1) / float64(c.Warmup)
	}
	if c.Decay == Constant {
		return c.LR
	}
	lo := c.LR * c.MinLRRatio
	if s >= c.TotalSteps {
		return lo
	}
	if c.Decay == Cosine {
		p := float64(s-c.Warmup) / float64(c.TotalSteps-c.Warmup)
		return lo + (c.LR-lo)*0.5*(1+math.Cos(math.Pi*p))
	}
	return lo + (c.LR-lo)*(float64(c.TotalSteps-s)/float64(c.TotalSteps-c.Warmup))
}

// checkSchedule validates the schedule fields (Decay filled).
func (c Config) checkSchedule() error {
	switch {
	case c.Warmup < 0:
		return fmt.Errorf("optim: Warmup must be >= 0, got %d", c.Warmup)
	case c.Decay != Linear && c.Decay != Cosine && c.Decay != Constant:
		return fmt.Errorf("optim: unknown schedule %q (valid: linear, cosine, constant)", c.Decay)
	case !(c.MinLRRatio >= 0 && c.MinLRRatio <= 1):
		return fmt.Errorf("optim: MinLRRatio must be in [0, 1], got %g", c.MinLRRatio)
	case c.Decay != Constant && (c.TotalSteps <= 0 || c.TotalSteps < c.Warmup):
		return fmt.Errorf("optim: %s decay needs TotalSteps (%d) > 0 and >= Warmup (%d)", c.Decay, c.TotalSteps, c.Warmup)
	}
	return nil
}
