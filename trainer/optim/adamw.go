// Package optim is AdamW on named float64 parameter tensors (plain Go, deterministic):
// parameter groups with their own weight decay, global gradient-norm clipping across all of
// them, a learning-rate schedule (linear warm-up, then linear or cosine decay to a floor, or
// constant), and the state a checkpoint needs to resume bit-identically (State, Restore,
// State.Tensors).
package optim

import (
	"fmt"
	"math"
	"sort"
)

// Config configures AdamW. Zero values of Beta1, Beta2, Eps and MaxGradNorm mean the
// defaults 0.9, 0.999, 1e-8 and 1.0; a negative MaxGradNorm disables clipping; an empty
// Decay means Linear. The schedule fields (LR, Warmup, Decay, TotalSteps, MinLRRatio) are
// described at LRAt.
type Config struct {
	// LR is the peak learning rate.
	LR    float64
	Beta1 float64
	Beta2 float64
	Eps   float64
	// WeightDecay is the decoupled decay of every parameter in no group of Groups.
	WeightDecay float64
	// Groups give some parameters their own weight decay: a parameter belongs to the first
	// group whose Match accepts its name.
	Groups []Group
	// MaxGradNorm is the bound on the global L2 norm of all gradients, every group's (see Step).
	MaxGradNorm float64
	// TotalSteps is the step at which the decay reaches its floor (required for Linear and
	// Cosine; see LRAt).
	TotalSteps int
	Decay      Schedule
	// Warmup steps ramp the rate linearly up to LR.
	Warmup int
	// MinLRRatio is the floor of the decay as a fraction of LR, in [0, 1] (0: decay to zero).
	MinLRRatio float64
}

// Group is a set of parameters, chosen by name, with its own weight decay.
type Group struct {
	// Name identifies the group in errors.
	Name string
	// Match reports whether the parameter of this name is in the group (nil: every one).
	Match func(name string) bool
	// WeightDecay is the group's decoupled decay.
	WeightDecay float64
}

// DefaultConfig is the paper's setting: lr with linear decay to zero over totalSteps,
// no warm-up, no weight decay, clipping at 1.0.
func DefaultConfig(lr float64, totalSteps int) Config {
	return Config{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, MaxGradNorm: 1.0, TotalSteps: totalSteps, Decay: Linear}
}

// AdamW is the optimizer. It is not safe for concurrent use.
type AdamW struct {
	cfg  Config
	step int
	m, v map[string][]float64
}

// New validates cfg (filling defaults) and returns an optimizer with no state yet; the
// first Step fixes the parameter names and lengths.
func New(cfg Config) (*AdamW, error) {
	if cfg.Beta1 == 0 {
		cfg.Beta1 = 0.9
	}
	if cfg.Beta2 == 0 {
		cfg.Beta2 = 0.999
	}
	if cfg.Eps == 0 {
		cfg.Eps = 1e-8
	}
	if cfg.MaxGradNorm == 0 {
		cfg.MaxGradNorm = 1.0
	}
	if cfg.Decay == "" {
		cfg.Decay = Linear
	}
	switch {
	case !(cfg.LR >= 0) || math.IsInf(cfg.LR, 0):
		return nil, fmt.Errorf("optim: LR must be >= 0 and finite, got %g", cfg.LR)
	case !(cfg.Beta1 > 0 && cfg.Beta1 < 1):
		return nil, fmt.Errorf("optim: Beta1 must be in (0,1), got %g", cfg.Beta1)
	case !(cfg.Beta2 > 0 && cfg.Beta2 < 1):
		return nil, fmt.Errorf("optim: Beta2 must be in (0,1), got %g", cfg.Beta2)
	case !(cfg.Eps > 0):
		return nil, fmt.Errorf("optim: Eps must be > 0, got %g", cfg.Eps)
	case !(cfg.WeightDecay >= 0) || math.IsInf(cfg.WeightDecay, 0):
		return nil, fmt.Errorf("optim: WeightDecay must be >= 0 and finite, got %g", cfg.WeightDecay)
	}
	for i, g := range cfg.Groups {
		if !(g.WeightDecay >= 0) || math.IsInf(g.WeightDecay, 0) {
			return nil, fmt.Errorf("optim: group %d (%s): WeightDecay must be >= 0 and finite, got %g", i, g.Name, g.WeightDecay)
		}
	}
	if err := cfg.checkSchedule(); err != nil {
		return nil, err
	}
	cfg.Groups = append([]Group(nil), cfg.Groups...)
	return &AdamW{cfg: cfg}, nil
}

// Config returns the effective configuration (defaults filled).
func (o *AdamW) Config() Config { return o.cfg }

// Steps is the number of steps taken.
func (o *AdamW) Steps() int { return o.step }

// LRAt is the learning rate of the step taken after s previous steps (Config.LRAt).
func (o *AdamW) LRAt(s int) float64 { return o.cfg.LRAt(s) }

// WeightDecay is the decay of the parameter of this name: its group's, or Config.WeightDecay.
func (o *AdamW) WeightDecay(name string) float64 {
	for _, g := range o.cfg.Groups {
		if g.Match == nil || g.Match(name) {
			return g.WeightDecay
		}
	}
	return o.cfg.WeightDecay
}

func sortedNames(m map[string][]float64) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Step updates params in place from grads (which it does not modify) and returns the
// global gradient norm before clipping and the learning rate used.
//
// Order of operations (PyTorch's clip_grad_norm_ + AdamW with parameter groups):
//  1. norm = sqrt(sum over all tensors, of every group, of g^2); if MaxGradNorm > 0 and
//     norm > MaxGradNorm, every gradient is scaled by MaxGradNorm/norm, so the clipped norm
//     is exactly MaxGradNorm (PyTorch adds 1e-6 to the denominator; we do not);
//  2. lr = LRAt(steps taken so far); t = steps + 1;
//  3. per value, with wd the decay of the tensor's group: p -= lr*wd*p (decoupled decay);
//     m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + Eps).
//
// Tensors are visited in sorted name order. params and grads must have the same names
// and lengths, and (after the first step or a Restore) the same as the state: Step
// panics otherwise; call Check first to get an error instead.
func (o *AdamW) Step(params, grads map[string][]float64) (gradNorm float64, lr float64) {
	names := sortedNames(params)
	if len(grads) != len(params) {
		panic(fmt.Sprintf("optim: %d parameter tensors but %d gradient tensors", len(params), len(grads)))
	}
	for _, n := range names {
		g, ok := grads[n]
		if !ok {
			panic(fmt.Sprintf("optim: no gradient for parameter %q", n))
		}
		if len(g) != len(params[n]) {
			panic(fmt.Sprintf("optim: gradient of %q has %d values, parameter has %d", n, len(g), len(params[n])))
		}
	}
	if err := o.Check(params); err != nil {
		panic(err.Error())
	}
	if o.m == nil {
		o.m, o.v = map[string][]float64{}, map[string][]float64{}
		for _, n := range names {
			o.m[n] = make([]float64, len(params[n]))
			o.v[n] = make([]float64, len(params[n]))
		}
	}
	sq := 0.0
	for _, n := range names {
		for _, g := range grads[n] {
			sq += g * g
		}
	}
	gradNorm = math.Sqrt(sq)
	scale := 1.0
	if o.cfg.MaxGradNorm > 0 && gradNorm > o.cfg.MaxGradNorm {
		scale = o.cfg.MaxGradNorm / gradNorm
	}
	lr = o.LRAt(o.step)
	o.step++
	c := o.cfg
	bc1 := 1 - math.Pow(c.Beta1, float64(o.step))
	bc2 := 1 - math.Pow(c.Beta2, float64(o.step))
	for _, n := range names {
		p, g, m, v := params[n], grads[n], o.m[n], o.v[n]
		wd := o.WeightDecay(n)
		for i := range p {
			gi := g[i] * scale
			p[i] -= lr * wd * p[i]
			m[i] = c.Beta1*m[i] + (1-c.Beta1)*gi
			v[i] = c.Beta2*v[i] + (1-c.Beta2)*gi*gi
			p[i] -= lr * (m[i] / bc1) / (math.Sqrt(v[i]/bc2) + c.Eps)
		}
	}
	return gradNorm, lr
}
