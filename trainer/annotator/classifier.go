package annotator

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"sync"
)

// classifier.json holds the weights of the "classifier" held-out evaluator, written by
// `go run hack/classifier.go` with TrainClassifier from trainer/task/reviews/data/sft.jsonl.
//
//go:embed data/classifier.json
var classifierJSON []byte

// LabelledText is one training sentence: Label 1 is positive, 0 negative.
type LabelledText struct {
	Text  string `json:"text"`
	Label int    `json:"label"`
}

// Training and scoring constants of the classifier (see the package doc). Changing one of the
// training constants changes data/classifier.json: rerun hack/classifier.go.
const (
	classifierMinDF    = 2     // a feature must occur in at least this many training sentences
	classifierLambda   = 1     // L2 penalty on the weights (not the bias), see TrainClassifier
	classifierNewton   = 20    // at most this many Newton steps, each solved by conjugate gradients
	classifierGradTol  = 1e-10 // Newton stops when the gradient's norm is below this
	classifierCG       = 100   // at most this many CG iterations per Newton step
	classifierDecimals = 4     // weights are stored rounded to this many decimals; 0 is dropped
	classifierBearing  = 1     // a word with |weight| >= this is sentiment-bearing for the guards
)

// classifierModel is a logistic regression over binary word unigrams and bigrams.
type classifierModel struct {
	bias    float64
	weights map[string]float64 // "word" or "word1 word2"
}

// classifierFile is the layout of data/classifier.json. Weights are JSON numbers written with
// classifierDecimals decimals; encoding/json writes the map sorted by key.
type classifierFile struct {
	Comment   string                 `json:"comment"`
	Sentences int                    `json:"sentences"`
	Positive  int                    `json:"positive"`
	Lambda    json.Number            `json:"lambda"`
	Bias      json.Number            `json:"bias"`
	Weights   map[string]json.Number `json:"weights"`
}

// features returns the distinct unigrams and bigrams of toks, in order of first occurrence.
func features(toks []string) []string {
	seen := make(map[string]struct{}, 2*len(toks))
	out := make([]string, 0, 2*len(toks))
	add := func(f string) {
		if _, ok := seen[f]; !ok {
			seen[f] = struct{}{}
			out = append(out, f)
		}
	}
	for i, t := range toks {
		add(t)
		if i+1 < len(toks) {
			add(t + " " + toks[i+1])
		}
	}
	return out
}

// knownWords is what the classifier is trained on: the tokens of text that IsWord accepts, the
// same sequence the guards hand to it (less repeated sentiment-bearing words).
func knownWords(text string) []string {
	var out []string
	for _, t := range Words(text) {
		if IsWord(t) {
			out = append(out, t)
		}
	}
	return out
}

func (m *classifierModel) logit(toks []string) float64 {
	z := m.bias
	for _, f := range features(toks) {
		z += m.weights[f]
	}
	return z
}

// TrainClassifier trains the classifier on rows and returns the contents of data/classifier.json.
//
// Features are the distinct unigrams and bigrams of a sentence's known words (the tokens of Words
// that IsWord accepts: what the guards hand to the scorer), with binary values, kept if they occur
// in at least classifierMinDF sentences. The model is a logistic regression with an unpenalised
// bias that minimises
//
//	sum_i n/(2 n_{y_i}) log(1 + exp(-y_i z_i)) + classifierLambda/2 |w|^2
//
// (each class weighs half however many sentences it has: scikit-learn's LogisticRegression with
// C = 1/classifierLambda and class_weight "balanced"), by Newton's method with conjugate gradients
// and a halving line search until the gradient vanishes to rounding. Weights are written with
// classifierDecimals decimals, sorted by feature.
//
// Training is deterministic: no random numbers, every order a sort or the order of rows, products
// rounded explicitly (no fused multiply-add). The rounding of the output also absorbs last-bit
// differences between platforms' math.Exp. The 2,424 training sentences of the reviews task take
// about 0.1 s.
func TrainClassifier(rows []LabelledText) ([]byte, error) {
	m, err := trainClassifier(rows)
	if err != nil {
		return nil, err
	}
	pos := 0
	for _, r := range rows {
		pos += r.Label
	}
	f := classifierFile{
		Comment:   "logistic regression over word unigrams and bigrams; built by go run hack/classifier.go (trainer/annotator.TrainClassifier); do not edit",
		Sentences: len(rows),
		Positive:  pos,
		Lambda:    json.Number(strconv.FormatFloat(classifierLambda, 'g', -1, 64)),
		Bias:      json.Number(strconv.FormatFloat(m.bias, 'f', classifierDecimals, 64)),
		Weights:   make(map[string]json.Number, len(m.weights)),
	}
	for k, w := range m.weights {
		s := strconv.FormatFloat(w, 'f', classifierDecimals, 64)
		if v, _ := strconv.ParseFloat(s, 64); v != 0 {
			f.Weights[k] = json.Number(s)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "\t")
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func trainClassifier(rows []LabelledText) (*classifierModel, error) {
	npos := 0
	docs := make([][]string, len(rows))
	df := map[string]int{}
	for i, r := range rows {
		if r.Label != 0 && r.Label != 1 {
			return nil, fmt.Errorf("row %d: label %d is not 0 or 1", i, r.Label)
		}
		npos += r.Label
		docs[i] = features(knownWords(r.Text))
		for _, f := range docs[i] {
			df[f]++
		}
	}
	n := len(rows)
	if npos == 0 || npos == n {
		return nil, errors.New("classifier: training needs both labels")
	}
	var vocab []string
	for f, c := range df {
		if c >= classifierMinDF {
			vocab = append(vocab, f)
		}
	}
	sort.Strings(vocab)
	index := make(map[string]int, len(vocab))
	for i, f := range vocab {
		index[f] = i
	}
	// X: one sorted list of feature indices per sentence; the bias is index d.
	d := len(vocab)
	x := make([][]int, n)
	for i, fs := range docs {
		for _, f := range fs {
			if j, ok := index[f]; ok {
				x[i] = append(x[i], j)
			}
		}
		sort.Ints(x[i])
		x[i] = append(x[i], d)
	}
	// Class-balanced weights, divided by n: c_i = 1/(2 n_class).
	y := make([]float64, n)
	c := make([]float64, n)
	for i, r := range rows {
		if r.Label == 1 {
			y[i], c[i] = 1, 1/(2*float64(npos))
		} else {
			y[i], c[i] = -1, 1/(2*float64(n-npos))
		}
	}
	lambda := classifierLambda / float64(n)
	w := make([]float64, d+1)
	z := make([]float64, n)
	margins := func(w []float64) {
		for i, xi := range x {
			s := 0.0
			for _, j := range xi {
				s += w[j]
			}
			z[i] = s
		}
	}
	objective := func(w []float64) float64 {
		margins(w)
		loss := 0.0
		for i := range z {
			loss += float64(c[i] * softplus(float64(-y[i]*z[i])))
		}
		reg := 0.0
		for _, v := range w[:d] {
			reg += float64(v * v)
		}
		return loss + float64(lambda*reg)/2
	}
	grad := make([]float64, d+1)
	hd := make([]float64, n) // Hessian weights c_i p_i (1 - p_i)
	hv := func(v, out []float64) {
		clear(out)
		for i, xi := range x {
			s := 0.0
			for _, j := range xi {
				s += v[j]
			}
			s = float64(hd[i] * s)
			for _, j := range xi {
				out[j] += s
			}
		}
		for j := 0; j < d; j++ {
			out[j] += float64(lambda * v[j])
		}
	}
	r := make([]float64, d+1)
	p := make([]float64, d+1)
	q := make([]float64, d+1)
	step := make([]float64, d+1)
	trial := make([]float64, d+1)
	fw := objective(w)
	for it := 0; it < classifierNewton; it++ {
		// Gradient and Hessian weights at w (z holds w's margins); stop at a gradient of rounding
		// size.
		clear(grad)
		for i, xi := range x {
			pr := sigmoid(float64(y[i] * z[i]))
			g := float64(float64(-c[i]*y[i]) * (1 - pr))
			hd[i] = float64(float64(c[i]*pr) * (1 - pr))
			for _, j := range xi {
				grad[j] += g
			}
		}
		for j := 0; j < d; j++ {
			grad[j] += float64(lambda * w[j])
		}
		if dot(grad, grad) < classifierGradTol*classifierGradTol {
			break
		}
		// Solve H step = -grad by conjugate gradients from 0.
		clear(step)
		for j := range r {
			r[j] = -grad[j]
			p[j] = r[j]
		}
		rr := dot(r, r)
		tol := 1e-10 * rr
		for k := 0; k < classifierCG && rr > tol; k++ {
			hv(p, q)
			alpha := rr / dot(p, q)
			for j := range step {
				step[j] += float64(alpha * p[j])
				r[j] -= float64(alpha * q[j])
			}
			rr2 := dot(r, r)
			beta := rr2 / rr
			rr = rr2
			for j := range p {
				p[j] = r[j] + float64(beta*p[j])
			}
		}
		// Backtracking line search on the objective.
		t := 1.0
		for ls := 0; ls < 30; ls++ {
			for j := range trial {
				trial[j] = w[j] + float64(t*step[j])
			}
			if ft := objective(trial); ft <= fw {
				fw = ft
				copy(w, trial)
				break
			}
			t /= 2
		}
		margins(w)
	}
	m := &classifierModel{bias: w[d], weights: make(map[string]float64, d)}
	for j, f := range vocab {
		m.weights[f] = w[j]
	}
	return m, nil
}

func dot(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += float64(a[i] * b[i])
	}
	return s
}

func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

// softplus is log(1 + e^z) without overflow.
func softplus(z float64) float64 {
	if z > 0 {
		return z + math.Log1p(math.Exp(-z))
	}
	return math.Log1p(math.Exp(z))
}

// parseClassifier reads the layout TrainClassifier writes.
func parseClassifier(data []byte) (*classifierModel, error) {
	var f classifierFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("classifier weights: %w", err)
	}
	m := &classifierModel{weights: make(map[string]float64, len(f.Weights))}
	var err error
	if m.bias, err = f.Bias.Float64(); err != nil {
		return nil, fmt.Errorf("classifier weights: bias: %w", err)
	}
	for k, v := range f.Weights {
		w, err := v.Float64()
		if err != nil || math.IsInf(w, 0) {
			return nil, fmt.Errorf("classifier weights: %q: %q is not a finite number", k, v)
		}
		m.weights[k] = w
	}
	return m, nil
}

var (
	classifierOnce sync.Once
	classifierData *classifierModel
)

// NewClassifier returns the held-out evaluator "classifier": the logistic regression of
// data/classifier.json under the same guards as the gold annotator (see the package doc). It is a
// model trained on labelled human sentences, not a lexicon, so it shares neither VADER's word list
// nor its rules.
func NewClassifier() *Guarded {
	classifierOnce.Do(func() {
		m, err := parseClassifier(classifierJSON)
		if err != nil {
			panic("annotator: embedded " + err.Error())
		}
		classifierData = m
	})
	return &Guarded{lex: classifierLexicon{classifierData}}
}

// NewClassifierFromJSON returns the "classifier" scorer with the weights data (as TrainClassifier
// writes them) instead of the embedded ones: for cross-validation and tests.
func NewClassifierFromJSON(data []byte) (*Guarded, error) {
	m, err := parseClassifier(data)
	if err != nil {
		return nil, err
	}
	return &Guarded{lex: classifierLexicon{m}}, nil
}

type classifierLexicon struct{ m *classifierModel }

func (classifierLexicon) name() string { return "classifier" }

func (c classifierLexicon) bearing(w string) bool {
	return math.Abs(c.m.weights[w]) >= classifierBearing
}

// polarity is 2 P(positive) - 1 = tanh(z/2).
func (c classifierLexicon) polarity(kept []string) float64 {
	return math.Tanh(c.m.logit(kept) / 2)
}
