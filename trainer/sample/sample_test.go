package sample

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

// bigram is a toy Model: the next-token logits depend only on the previous token.
type bigram struct {
	table [][]float64
	ctx   int
	t     *testing.T
}

func (b *bigram) VocabSize() int  { return len(b.table) }
func (b *bigram) ContextLen() int { return b.ctx }
func (b *bigram) NewCache(n int) Cache {
	return &bigramCache{m: b, last: make([]int, n), pos: make([]int, n), done: make([]bool, n)}
}

type bigramCache struct {
	m    *bigram
	last []int
	pos  []int
	done []bool
}

func (c *bigramCache) row(tok int) []float64 { return append([]float64(nil), c.m.table[tok]...) }

func (c *bigramCache) Prefill(row int, tokens []int) []float64 {
	if c.pos[row] != 0 || len(tokens) == 0 || len(tokens) > c.m.ctx {
		c.m.t.Fatalf("bad Prefill row %d len %d (pos %d)", row, len(tokens), c.pos[row])
	}
	c.pos[row] = len(tokens)
	c.last[row] = tokens[len(tokens)-1]
	return c.row(c.last[row])
}

func (c *bigramCache) Step(rows []int, tokens []int) [][]float64 {
	out := make([][]float64, len(rows))
	for k, r := range rows {
		if k > 0 && rows[k-1] >= r {
			c.m.t.Fatalf("Step rows not ascending: %v", rows)
		}
		if c.pos[r] == 0 || c.pos[r] >= c.m.ctx {
			c.m.t.Fatalf("Step row %d at position %d (context %d)", r, c.pos[r], c.m.ctx)
		}
		c.pos[r]++
		c.last[r] = tokens[k]
		out[k] = c.row(tokens[k])
	}
	return out
}

// Vocabulary of 6 with EOT = 5; token 3 leads to EOT with high probability.
func toy(t *testing.T) *bigram {
	return &bigram{t: t, ctx: 24, table: [][]float64{
		{0.1, 1.2, 0.3, -0.5, 0.9, -1.0},
		{0.7, -0.2, 1.1, 0.4, 0.0, -2.0},
		{-0.3, 0.8, 0.2, 1.4, 0.5, -1.5},
		{0.2, 0.1, -0.4, 0.3, 0.6, 1.9},
		{1.0, 0.0, 0.4, 0.9, -0.1, -0.5},
		{0.0, 0.3, 0.2, 0.1, 0.5, -3.0},
	}}
}

const eot = 5

func prompts8() [][]int {
	return [][]int{{0}, {1, 2}, {3}, {4, 4, 0}, {2}, {0, 1}, {1}, {3, 3}}
}

func TestReproducible(t *testing.T) {
	m := toy(t)
	opt := Options{Temperature: 1, MaxNewTokens: 12, EOT: eot, Seed: 42}
	a, err := Generate(m, prompts8(), opt)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Generate(m, prompts8(), opt)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different samples:\n%v\n%v", a, b)
	}
	opt.Seed = 43
	c, _ := Generate(m, prompts8(), opt)
	if reflect.DeepEqual(a, c) {
		t.Errorf("seeds 42 and 43 gave identical samples %v", a)
	}
	lens := map[int]bool{}
	for _, r := range a {
		lens[len(r)] = true
		for _, tok := range r {
			if tok == eot {
				t.Errorf("EOT in output %v", r)
			}
		}
	}
	if len(lens) < 2 {
		t.Errorf("rows should finish at different times to exercise batching: %v", a)
	}
	t.Logf("seed 42: %v", a)
}

func TestShardingInvariance(t *testing.T) {
	m := toy(t)
	for _, opt := range []Options{
		{Temperature: 1, MaxNewTokens: 12, EOT: eot, Seed: 7},
		{Temperature: 0.7, TopK: 3, TopP: 0.9, MaxNewTokens: 12, EOT: eot, Seed: 8},
	} {
		all, err := Generate(m, prompts8(), opt)
		if err != nil {
			t.Fatal(err)
		}
		var sharded [][]int
		for _, shard := range [][2]int{{0, 3}, {3, 4}, {4, 8}} {
			o := opt
			o.RowOffset = shard[0]
			part, err := Generate(m, prompts8()[shard[0]:shard[1]], o)
			if err != nil {
				t.Fatal(err)
			}
			sharded = append(sharded, part...)
		}
		if !reflect.DeepEqual(all, sharded) {
			t.Errorf("sharded sampling differs:\nall     %v\nsharded %v", all, sharded)
		}
		// Rows 0..3 and 4..7 as the brief states it.
		lo, _ := Generate(m, prompts8()[:4], opt)
		o := opt
		o.RowOffset = 4
		hi, _ := Generate(m, prompts8()[4:], o)
		if !reflect.DeepEqual(all, append(lo, hi...)) {
			t.Errorf("0..3 + 4..7 differs from 0..7")
		}
		// A row alone (offset = its index) gets the same continuation.
		o.RowOffset = 5
		one, _ := Generate(m, prompts8()[5:6], o)
		if !reflect.DeepEqual(one[0], all[5]) {
			t.Errorf("row 5 alone %v, in batch %v", one[0], all[5])
		}
	}
}

func TestFiltersThatKeepOneEqualGreedy(t *testing.T) {
	m := toy(t)
	greedy, err := Generate(m, prompts8(), Options{Greedy: true, MaxNewTokens: 10, EOT: eot})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("greedy: %v", greedy)
	for name, opt := range map[string]Options{
		"top-k 1":          {Temperature: 1, TopK: 1, MaxNewTokens: 10, EOT: eot, Seed: 1},
		"top-p tiny":       {Temperature: 1, TopP: 1e-9, MaxNewTokens: 10, EOT: eot, Seed: 2},
		"temperature 0":    {Temperature: 0, MaxNewTokens: 10, EOT: eot, Seed: 3},
		"temperature 1e-6": {Temperature: 1e-6, MaxNewTokens: 10, EOT: eot, Seed: 4},
		"top-k 1 hot":      {Temperature: 50, TopK: 1, MaxNewTokens: 10, EOT: eot, Seed: 5},
	} {
		got, err := Generate(m, prompts8(), opt)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, greedy) {
			t.Errorf("%s: %v, want greedy %v", name, got, greedy)
		}
	}
}

func TestGreedyTieBreakAndStops(t *testing.T) {
	m := &bigram{t: t, ctx: 6, table: [][]float64{
		{0, 2, 2, 0}, // tie between 1 and 2: 1 wins
		{0, 0, 0, 5}, // 1 -> EOT (3)
		{0, 0, 9, 0}, // 2 -> 2 forever
		{0, 0, 0, 0},
	}}
	out, err := Generate(m, [][]int{{0}, {2}, {2, 2, 2, 2}, {2, 2, 2, 2, 2}, {2, 2, 2, 2, 2, 2}}, Options{Greedy: true, MaxNewTokens: 3, EOT: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]int{
		{1},       // 0 -> 1 (tie-break) -> EOT, not included
		{2, 2, 2}, // MaxNewTokens
		{2, 2},    // context 6: 4 + 2
		{2},       // 5 + 1: drawn but not fed back
		{},        // prompt fills the context
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("got %v, want %v", out, want)
	}
	// Without an EOT id, row 0 continues past token 3.
	out, _ = Generate(m, [][]int{{0}}, Options{Greedy: true, MaxNewTokens: 3, EOT: -1})
	if !reflect.DeepEqual(out[0], []int{1, 3, 0}) {
		t.Errorf("EOT disabled: %v", out[0])
	}
}

func softmax(l []float64, temp float64) []float64 {
	p := make([]float64, len(l))
	s := 0.0
	for i, v := range l {
		p[i] = math.Exp(v / temp)
		s += p[i]
	}
	for i := range p {
		p[i] /= s
	}
	return p
}

// chiSquare of observed counts against expected probabilities (cells with p = 0 must
// have no counts).
func chiSquare(t *testing.T, counts []int, p []float64, n int) float64 {
	x := 0.0
	for i := range p {
		if p[i] == 0 {
			if counts[i] != 0 {
				t.Errorf("token %d has probability 0 but was drawn %d times", i, counts[i])
			}
			continue
		}
		e := p[i] * float64(n)
		x += (float64(counts[i]) - e) * (float64(counts[i]) - e) / e
	}
	return x
}

func TestEmpiricalFrequencies(t *testing.T) {
	m := toy(t)
	const n = 30000
	prompts := make([][]int, n)
	for i := range prompts {
		prompts[i] = []int{2}
	}
	logits := m.table[2]
	// Expected distributions (p = 0 cells excluded from the degrees of freedom).
	top3 := softmax(logits, 1)
	// logits of row 2 sorted: 3 (1.4), 1 (0.8), 4 (0.5), 2 (0.2), 0 (-0.3), 5 (-1.5)
	for _, i := range []int{2, 0, 5} {
		top3[i] = 0
	}
	s := top3[3] + top3[1] + top3[4]
	for i := range top3 {
		top3[i] /= s
	}
	cases := []struct {
		name string
		opt  Options
		want []float64
	}{
		{"T=1", Options{Temperature: 1}, softmax(logits, 1)},
		{"T=0.5", Options{Temperature: 0.5}, softmax(logits, 0.5)},
		{"top-k 3", Options{Temperature: 1, TopK: 3}, top3},
		// top-p 0.7 at T=1: p(3)=0.398, +p(1)=0.617, +p(4)=0.774 >= 0.7, so the same 3.
		{"top-p 0.7", Options{Temperature: 1, TopP: 0.7}, top3},
	}
	for _, c := range cases {
		opt := c.opt
		opt.MaxNewTokens, opt.EOT, opt.Seed = 1, -1, 99
		out, err := Generate(m, prompts, opt)
		if err != nil {
			t.Fatal(err)
		}
		counts := make([]int, len(logits))
		for _, r := range out {
			counts[r[0]]++
		}
		df := -1
		for _, p := range c.want {
			if p > 0 {
				df++
			}
		}
		x := chiSquare(t, counts, c.want, n)
		// The 99.9% quantile of chi-square is 18.47 for 4 df, 13.82 for 2 df.
		limit := map[int]float64{5: 20.52, 4: 18.47, 2: 13.82}[df]
		t.Logf("%-9s chi-square %.2f (df %d, 99.9%% limit %.2f) counts %v", c.name, x, df, limit, counts)
		if x > limit {
			t.Errorf("%s: frequencies %v do not match %v (chi-square %.2f > %.2f)", c.name, counts, c.want, x, limit)
		}
		probs, err := Probs(logits, opt.Temperature, opt.TopK, opt.TopP)
		if err != nil {
			t.Fatal(err)
		}
		for i := range probs {
			// 1e-8: the sampler's exponential is kernels.SoftmaxWeights's polynomial (1e-9 relative)
			if math.Abs(probs[i]-c.want[i]) > 1e-8 {
				t.Errorf("%s: Probs %v, want %v", c.name, probs, c.want)
				break
			}
		}
	}
}

func TestErrors(t *testing.T) {
	m := toy(t)
	ok := Options{Temperature: 1, MaxNewTokens: 4, EOT: eot}
	long := make([]int, 25)
	cases := map[string]struct {
		prompts [][]int
		opt     Options
		want    string
	}{
		"empty prompt":   {[][]int{{1}, {}}, ok, "row 1: empty prompt"},
		"too long":       {[][]int{long}, ok, "exceeds the context length"},
		"bad id":         {[][]int{{6}}, ok, "outside the vocabulary"},
		"max new tokens": {[][]int{{1}}, Options{Temperature: 1}, "MaxNewTokens"},
		"top-p":          {[][]int{{1}}, Options{Temperature: 1, MaxNewTokens: 1, TopP: 1.5}, "TopP"},
		"temperature":    {[][]int{{1}}, Options{Temperature: -1, MaxNewTokens: 1}, "Temperature"},
		"top-k":          {[][]int{{1}}, Options{Temperature: 1, MaxNewTokens: 1, TopK: -2}, "TopK"},
	}
	for name, c := range cases {
		_, err := Generate(m, c.prompts, c.opt)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", name, err, c.want)
		}
	}
	nan := &bigram{t: t, ctx: 4, table: [][]float64{{math.NaN(), 0}, {0, 0}}}
	if _, err := Generate(nan, [][]int{{0}}, ok); err == nil || !strings.Contains(err.Error(), "NaN") {
		t.Errorf("NaN logits: %v", err)
	}
	if out, err := Generate(m, nil, ok); err != nil || len(out) != 0 {
		t.Errorf("no prompts: %v %v", out, err)
	}
}
