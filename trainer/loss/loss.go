// Package loss implements the direct-alignment losses DPO, IPO and SLiC on gorgonia
// nodes (for training) and in plain Go (for checks and reporting), plus the reward
// diagnostics of the BPO paper.
//
// All losses are functions of the log-ratio margin per pair
//
//	h = [log pi(y_w|x) - log ref(y_w|x)] - [log pi(y_l|x) - log ref(y_l|x)]
//
// and the batch loss is the mean over pairs:
//
//	DPO:  -log sigmoid(beta*h) = softplus(-beta*h)   (computed stably)
//	IPO:  (h - 1/(2*beta))^2
//	SLiC: max(0, 1 - beta*h)
//
// Which log-probs are passed (sums over response tokens, or per-token means for IPO
// when loss.ipoLengthNormalize is set) is the caller's choice; see docs/design.md.
//
// Length regularisation (R-DPO: Park et al. 2024, "Disentangling Length from Quality in Direct
// Preference Optimization") adds alpha*(|y_w| - |y_l|), response lengths in tokens, to beta*h in
// every loss: h becomes h + (alpha/beta)*(|y_w| - |y_l|). A preference that the length difference
// already explains then needs no policy change, so the implicit reward is not pushed towards
// "longer is better". ShiftReference applies it as a per-token shift of the reference log-prob
// sums, which is exactly the same h and needs nothing of the training graph.
package loss

import (
	"fmt"
	"math"
	"strings"

	"gorgonia.org/gorgonia"
)

// Kind names a loss.
type Kind string

// The supported losses.
const (
	DPO  Kind = "dpo"
	IPO  Kind = "ipo"
	SLiC Kind = "slic"
)

// Kinds lists the supported losses.
var Kinds = []Kind{DPO, IPO, SLiC}

// ParseKind accepts a loss name in any case ("DPO", "ipo", "SLiC").
func ParseKind(s string) (Kind, error) {
	k := Kind(strings.ToLower(strings.TrimSpace(s)))
	for _, v := range Kinds {
		if k == v {
			return v, nil
		}
	}
	return "", fmt.Errorf("loss: unknown kind %q (valid: dpo, ipo, slic)", s)
}

func (k Kind) norm() (Kind, error) { return ParseKind(string(k)) }

func checkBeta(beta float64) error {
	if !(beta > 0) || math.IsInf(beta, 0) {
		return fmt.Errorf("loss: beta must be positive and finite, got %g", beta)
	}
	return nil
}

// Node builds the mean loss over the batch from the policy's (pc, pr) and the
// reference's (rc, rr) sequence log-probs of the chosen and rejected responses, each a
// float64 vector of shape (P).
//
// The reference nodes enter only through h; pass them as inputs/constants and leave
// them out of the nodes you differentiate with respect to (gorgonia.Grad computes only
// the gradients asked for), so the reference receives no gradient.
//
// DPO is built as relu(z) + log1p(exp(z - 2 relu(z))) with z = -beta*h: no overflow
// for any |beta*h| and the exact derivative sigmoid(z), also at z = 0 (gorgonia's
// Softplus approximates softplus(x) by x above 16).
func Node(kind Kind, beta float64, pc, pr, rc, rr *gorgonia.Node) (*gorgonia.Node, error) {
	kind, err := kind.norm()
	if err != nil {
		return nil, err
	}
	if err := checkBeta(beta); err != nil {
		return nil, err
	}
	for i, n := range []*gorgonia.Node{pc, pr, rc, rr} {
		if n == nil {
			return nil, fmt.Errorf("loss: input %d of (pc, pr, rc, rr) is nil", i)
		}
		if n.Dims() != 1 {
			return nil, fmt.Errorf("loss: %s has shape %v, want a vector (P)", n.Name(), n.Shape())
		}
		if n.Dtype() != gorgonia.Float64 {
			return nil, fmt.Errorf("loss: %s has dtype %v, want float64", n.Name(), n.Dtype())
		}
		if n.Shape()[0] != pc.Shape()[0] {
			return nil, fmt.Errorf("loss: %s has length %d, pc has %d", n.Name(), n.Shape()[0], pc.Shape()[0])
		}
	}
	c := func(v float64) *gorgonia.Node { return gorgonia.NewConstant(v) }
	var e error
	must := func(n *gorgonia.Node, err error) *gorgonia.Node {
		if err != nil && e == nil {
			e = err
		}
		return n
	}
	// h = (pc - rc) - (pr - rr)
	h := must(gorgonia.Sub(must(gorgonia.Sub(pc, rc)), must(gorgonia.Sub(pr, rr))))
	if e != nil {
		return nil, e
	}
	var per *gorgonia.Node
	switch kind {
	case DPO:
		z := must(gorgonia.Mul(h, c(-beta)))
		r := must(gorgonia.Rectify(z))
		negAbs := must(gorgonia.Sub(z, must(gorgonia.Mul(r, c(2)))))
		per = must(gorgonia.Add(r, must(gorgonia.Log1p(must(gorgonia.Exp(negAbs))))))
	case IPO:
		per = must(gorgonia.Square(must(gorgonia.Sub(h, c(1/(2*beta))))))
	case SLiC:
		per = must(gorgonia.Rectify(must(gorgonia.Sub(c(1), must(gorgonia.Mul(h, c(beta)))))))
	}
	if e != nil {
		return nil, fmt.Errorf("loss: building %s: %w", kind, e)
	}
	out, err := gorgonia.Mean(per)
	if err != nil {
		return nil, fmt.Errorf("loss: building %s mean: %w", kind, err)
	}
	return out, nil
}

// Softplus is log(1 + exp(x)) without overflow or loss of precision.
func Softplus(x float64) float64 {
	if x > 0 {
		return x + math.Log1p(math.Exp(-x))
	}
	return math.Log1p(math.Exp(x))
}

// Values is the plain-Go twin of Node: the mean loss and the per-pair losses.
// The slices must have equal lengths (it panics otherwise).
func Values(kind Kind, beta float64, pc, pr, rc, rr []float64) (mean float64, per []float64) {
	kind, err := kind.norm()
	if err != nil {
		panic(err)
	}
	checkLens(pc, pr, rc, rr)
	per = make([]float64, len(pc))
	for i := range pc {
		h := (pc[i] - rc[i]) - (pr[i] - rr[i])
		switch kind {
		case DPO:
			per[i] = Softplus(-beta * h)
		case IPO:
			d := h - 1/(2*beta)
			per[i] = d * d
		case SLiC:
			per[i] = math.Max(0, 1-beta*h)
		}
		mean += per[i]
	}
	if len(per) > 0 {
		mean /= float64(len(per))
	}
	return mean, per
}

// ShiftReference returns the reference log-prob sums ref[i] - (alpha/beta)*lengths[i]: fed to
// Node or Values in place of ref, they turn h into h + (alpha/beta)*(|y_w| - |y_l|), R-DPO's
// length term (see the package comment). lengths are the responses' token counts (the tokens
// whose log-probs are summed). alpha = 0 returns ref itself. It panics on a length mismatch.
func ShiftReference(ref []float64, lengths []int, alpha, beta float64) []float64 {
	if len(lengths) != len(ref) {
		panic(fmt.Sprintf("loss: %d reference log-probs, %d lengths", len(ref), len(lengths)))
	}
	if alpha == 0 {
		return ref
	}
	out := make([]float64, len(ref))
	for i, r := range ref {
		out[i] = r - alpha/beta*float64(lengths[i])
	}
	return out
}

func checkLens(pc, pr, rc, rr []float64) {
	if len(pr) != len(pc) || len(rc) != len(pc) || len(rr) != len(pc) {
		panic(fmt.Sprintf("loss: length mismatch pc %d pr %d rc %d rr %d", len(pc), len(pr), len(rc), len(rr)))
	}
}

// Stats are the reward diagnostics of a batch. The implicit reward of a response is
// beta*(log pi - log ref).
type Stats struct {
	// RewardsChosen and RewardsRejected are the mean implicit rewards.
	RewardsChosen   float64 `json:"rewardsChosen"`
	RewardsRejected float64 `json:"rewardsRejected"`
	// Margin is the mean of chosen - rejected reward (= beta * mean h).
	Margin float64 `json:"margin"`
	// Accuracy is the fraction of pairs whose chosen reward is strictly greater.
	Accuracy float64 `json:"accuracy"`
	// N is the number of pairs.
	N int `json:"n"`
}

// Diagnostics computes Stats; slices must have equal lengths (it panics otherwise).
func Diagnostics(beta float64, pc, pr, rc, rr []float64) Stats {
	checkLens(pc, pr, rc, rr)
	s := Stats{N: len(pc)}
	if s.N == 0 {
		return s
	}
	correct := 0
	for i := range pc {
		c := beta * (pc[i] - rc[i])
		r := beta * (pr[i] - rr[i])
		s.RewardsChosen += c
		s.RewardsRejected += r
		s.Margin += c - r
		if c > r {
			correct++
		}
	}
	n := float64(s.N)
	s.RewardsChosen /= n
	s.RewardsRejected /= n
	s.Margin /= n
	s.Accuracy = float64(correct) / n
	return s
}

// KLEstimate is the Monte-Carlo estimate of KL(sampler || other) =
// mean_i [log p_sampler(y_i) - log p_other(y_i)], valid when the sequences y_i were
// drawn from the sampler (e.g. the behavior model's samples scored by both models).
// It is unbiased but a single estimate can be negative. Empty input gives 0; slices of
// unequal length panic.
func KLEstimate(logpSampler, logpOther []float64) float64 {
	if len(logpSampler) != len(logpOther) {
		panic(fmt.Sprintf("loss: KLEstimate length mismatch %d vs %d", len(logpSampler), len(logpOther)))
	}
	if len(logpSampler) == 0 {
		return 0
	}
	s := 0.0
	for i := range logpSampler {
		s += logpSampler[i] - logpOther[i]
	}
	return s / float64(len(logpSampler))
}
