package optim

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"testing"
)

type goldenCase struct {
	name string
	cfg  Config
}

func goldenCases() []goldenCase {
	mk := func(clip, wd float64) Config {
		c := DefaultConfig(0.01, 7)
		c.MaxGradNorm, c.WeightDecay = clip, wd
		return c
	}
	return []goldenCase{
		{"clip1", mk(1, 0)},
		{"noclip", mk(-1, 0)},
		{"clip0.5-wd", mk(0.5, 0.05)},
	}
}

// goldenRun takes 6 steps (a State/Restore round trip after the third) and hashes the bits of
// every rate, norm, parameter and moment.
func goldenRun(cfg Config) string {
	o, err := New(cfg)
	if err != nil {
		panic(err)
	}
	h := fnv.New64a()
	put := func(v float64) { binary.Write(h, binary.LittleEndian, math.Float64bits(v)) }
	p := params()
	for s := range 6 {
		if s == 3 {
			o2, _ := New(cfg)
			if err := o2.Restore(o.State()); err != nil {
				panic(err)
			}
			o = o2
		}
		g := gradAt(s, p)
		for n := range g {
			for i := range g[n] {
				g[n][i] *= 0.3
			}
		}
		n, lr := o.Step(p, g)
		put(n)
		put(lr)
	}
	st := o.State()
	for _, n := range sortedNames(p) {
		for i := range p[n] {
			put(p[n][i])
			put(st.M[n][i])
			put(st.V[n][i])
		}
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// TestGoldenBitsUnchanged pins the exact bits of the single-group optimizer the train stage
// runs (DefaultConfig: linear decay to zero, no warm-up, clipping), through a State/Restore
// round trip. The hashes were computed by the optimizer before parameter groups, cosine decay
// and MinLRRatio existed: adding them must not move a bit of the train stage.
func TestGoldenBitsUnchanged(t *testing.T) {
	want := map[string]string{"clip1": "3eab98f132918b01", "noclip": "c9d5bce87feed1a4", "clip0.5-wd": "573208ee5ffd54d2"}
	for _, c := range goldenCases() {
		if got := goldenRun(c.cfg); got != want[c.name] {
			t.Errorf("%s: hash %s, want %s (the train stage's numbers changed)", c.name, got, want[c.name])
		}
	}
}
