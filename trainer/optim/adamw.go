// Package optim is AdamW with global gradient-norm clipping and a linear learning-rate
// schedule, on named float64 parameter tensors (plain Go, deterministic).
package optim

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// Schedule is the learning-rate schedule after warm-up.
type Schedule string

const (
	// Linear decays the rate linearly to zero at TotalSteps (the default).
	Linear Schedule = "linear"
	// Constant keeps the rate at LR after warm-up.
	Constant Schedule = "constant"
)

// Config configures AdamW. Zero values of Beta1, Beta2, Eps and MaxGradNorm mean the
// defaults 0.9, 0.999, 1e-8 and 1.0; a negative MaxGradNorm disables clipping; an empty
// Decay means Linear.
type Config struct {
	LR          float64
	Beta1       float64
	Beta2       float64
	Eps         float64
	WeightDecay float64
	// MaxGradNorm is the bound on the global L2 norm of all gradients (see Step).
	MaxGradNorm float64
	// TotalSteps is the length of the linear decay (required for Linear).
	TotalSteps int
	Decay      Schedule
	// Warmup steps ramp the rate linearly from 0.
	Warmup int
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

// State is what a checkpoint needs to resume: the number of steps taken and the first
// and second moments per parameter name.
type State struct {
	Step int                  `json:"step"`
	M    map[string][]float64 `json:"m"`
	V    map[string][]float64 `json:"v"`
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
	case !(cfg.WeightDecay >= 0):
		return nil, fmt.Errorf("optim: WeightDecay must be >= 0, got %g", cfg.WeightDecay)
	case cfg.Warmup < 0:
		return nil, fmt.Errorf("optim: Warmup must be >= 0, got %d", cfg.Warmup)
	case cfg.Decay != Linear && cfg.Decay != Constant:
		return nil, fmt.Errorf("optim: unknown Decay %q (valid: linear, constant)", cfg.Decay)
	case cfg.Decay == Linear && cfg.TotalSteps <= cfg.Warmup:
		return nil, fmt.Errorf("optim: linear decay needs TotalSteps (%d) > Warmup (%d)", cfg.TotalSteps, cfg.Warmup)
	}
	return &AdamW{cfg: cfg}, nil
}

// Config returns the effective configuration (defaults filled).
func (o *AdamW) Config() Config { return o.cfg }

// Steps is the number of steps taken.
func (o *AdamW) Steps() int { return o.step }

// LRAt is the learning rate of the step taken after s previous steps (s = 0 is the first
// step), following Hugging Face's get_linear_schedule_with_warmup:
// LR*s/Warmup during warm-up, then LR*(TotalSteps-s)/(TotalSteps-Warmup), never below 0.
// With Constant, LR after warm-up.
func (o *AdamW) LRAt(s int) float64 {
	c := o.cfg
	if s < c.Warmup {
		return c.LR * float64(s) / float64(c.Warmup)
	}
	if c.Decay == Constant {
		return c.LR
	}
	return c.LR * math.Max(0, float64(c.TotalSteps-s)/float64(c.TotalSteps-c.Warmup))
}

func sortedNames(m map[string][]float64) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Check reports whether params have exactly the names and lengths of the optimizer's
// state (always nil before the first Step or Restore).
func (o *AdamW) Check(params map[string][]float64) error {
	if o.m == nil {
		return nil
	}
	return match(params, "parameter", o.m, "optimizer state")
}

// match reports the first name (in sorted order) that a and b do not share, or whose
// lengths differ.
func match(a map[string][]float64, aName string, b map[string][]float64, bName string) error {
	for _, n := range sortedNames(a) {
		st, ok := b[n]
		if !ok {
			return fmt.Errorf("optim: %s %q is missing from the %s", aName, n, bName)
		}
		if len(st) != len(a[n]) {
			return fmt.Errorf("optim: %s %q has %d values, the %s has %d", aName, n, len(a[n]), bName, len(st))
		}
	}
	for _, n := range sortedNames(b) {
		if _, ok := a[n]; !ok {
			return fmt.Errorf("optim: %s has %q, which is missing from the %ss", bName, n, aName)
		}
	}
	return nil
}

// Step updates params in place from grads (which it does not modify) and returns the
// global gradient norm before clipping and the learning rate used.
//
// Order of operations (PyTorch's clip_grad_norm_ + AdamW):
//  1. norm = sqrt(sum over all tensors of g^2); if MaxGradNorm > 0 and norm > MaxGradNorm,
//     every gradient is scaled by MaxGradNorm/norm, so the clipped norm is exactly
//     MaxGradNorm (PyTorch adds 1e-6 to the denominator; we do not);
//  2. lr = LRAt(steps taken so far); t = steps + 1;
//  3. per value: p -= lr*WeightDecay*p (decoupled decay); m = b1*m + (1-b1)*g;
//     v = b2*v + (1-b2)*g^2; p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + Eps).
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
		for i := range p {
			gi := g[i] * scale
			p[i] -= lr * c.WeightDecay * p[i]
			m[i] = c.Beta1*m[i] + (1-c.Beta1)*gi
			v[i] = c.Beta2*v[i] + (1-c.Beta2)*gi*gi
			p[i] -= lr * (m[i] / bc1) / (math.Sqrt(v[i]/bc2) + c.Eps)
		}
	}
	return gradNorm, lr
}

// State returns a deep copy of the optimizer state.
func (o *AdamW) State() State {
	st := State{Step: o.step, M: map[string][]float64{}, V: map[string][]float64{}}
	for n := range o.m {
		st.M[n] = append([]float64(nil), o.m[n]...)
		st.V[n] = append([]float64(nil), o.v[n]...)
	}
	return st
}

// Restore replaces the optimizer state by a copy of st. It checks that st is consistent
// (Step >= 0, M and V with the same names and lengths, finite values, V >= 0) and, if the
// optimizer already has state (a Step or Restore happened), that the names and lengths
// match it. Use Check(params) to validate against the parameters being trained.
func (o *AdamW) Restore(st State) error {
	if st.Step < 0 {
		return fmt.Errorf("optim: restore: negative step count %d", st.Step)
	}
	if len(st.M) != len(st.V) {
		return fmt.Errorf("optim: restore: %d first-moment tensors but %d second-moment tensors", len(st.M), len(st.V))
	}
	for _, n := range sortedNames(st.M) {
		v, ok := st.V[n]
		if !ok {
			return fmt.Errorf("optim: restore: %q has a first moment but no second moment", n)
		}
		if len(v) != len(st.M[n]) {
			return fmt.Errorf("optim: restore: %q has %d first-moment values but %d second-moment values", n, len(st.M[n]), len(v))
		}
		for i := range v {
			if math.IsNaN(st.M[n][i]) || math.IsInf(st.M[n][i], 0) || !(v[i] >= 0) || math.IsInf(v[i], 0) {
				return fmt.Errorf("optim: restore: %q[%d] has invalid moments m=%g v=%g", n, i, st.M[n][i], v[i])
			}
		}
	}
	if o.m != nil {
		if err := match(st.M, "restored tensor", o.m, "current optimizer state"); err != nil {
			return fmt.Errorf("optim: restore: %s", strings.TrimPrefix(err.Error(), "optim: "))
		}
	}
	if st.Step == 0 && len(st.M) == 0 {
		o.step, o.m, o.v = 0, nil, nil
		return nil
	}
	cp := st
	cp.M, cp.V = map[string][]float64{}, map[string][]float64{}
	for n := range st.M {
		cp.M[n] = append([]float64(nil), st.M[n]...)
		cp.V[n] = append([]float64(nil), st.V[n]...)
	}
	o.step, o.m, o.v = cp.Step, cp.M, cp.V
	return nil
}
