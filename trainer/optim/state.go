package optim

import (
	"fmt"
	"math"
	"strings"
)

// State is what a checkpoint needs to resume: the number of steps taken and the first
// and second moments per parameter name. (The configuration, groups included, is not state:
// a resumed run builds its optimizer from the same Config.)
type State struct {
	Step int                  `json:"step"`
	M    map[string][]float64 `json:"m"`
	V    map[string][]float64 `json:"v"`
}

// Prefixes of the moments' names in State.Tensors.
const (
	FirstMomentPrefix  = "m/"
	SecondMomentPrefix = "v/"
)

// Tensors is the moments as named tensors for a checkpoint file: "m/<name>" and "v/<name>"
// (the slices are shared with st). The step count is kept beside them; StateFromTensors is
// the inverse.
func (st State) Tensors() map[string][]float64 {
	t := make(map[string][]float64, 2*len(st.M))
	for n, m := range st.M {
		t[FirstMomentPrefix+n] = m
	}
	for n, v := range st.V {
		t[SecondMomentPrefix+n] = v
	}
	return t
}

// StateFromTensors rebuilds the State of State.Tensors (the slices are shared with tensors);
// a name with neither prefix is an error. Restore checks the result.
func StateFromTensors(step int, tensors map[string][]float64) (State, error) {
	st := State{Step: step, M: map[string][]float64{}, V: map[string][]float64{}}
	for name, t := range tensors {
		switch {
		case strings.HasPrefix(name, FirstMomentPrefix):
			st.M[strings.TrimPrefix(name, FirstMomentPrefix)] = t
		case strings.HasPrefix(name, SecondMomentPrefix):
			st.V[strings.TrimPrefix(name, SecondMomentPrefix)] = t
		default:
			return State{}, fmt.Errorf("optim: unexpected tensor %q in optimizer state", name)
		}
	}
	return st, nil
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
