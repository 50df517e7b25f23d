package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bpo-dev/bpo/trainer/annotator"
	"github.com/bpo-dev/bpo/trainer/model"
)

// Per-phase diagnostics: how the policy's implicit reward generalises to pairs it has not been
// trained on, and what its greedy completions look like next to the human references.

// TextStats describes a set of texts: the greedy completions of an evaluation, or the human
// references of the same prompts.
type TextStats struct {
	Texts int `json:"texts"`
	// Cut is the number of texts the token budget (maxNewTokens or the context) stopped before the
	// model ended them: their last word may be cut short.
	Cut int `json:"cut,omitempty"`
	// MeanTokens is the mean length in model tokens (a completion's end-of-text not counted);
	// MeanWords the mean number of words (annotator.Words).
	MeanTokens float64 `json:"meanTokens"`
	MeanWords  float64 `json:"meanWords"`
	// Distinct1 and Distinct2 are corpus-level distinct word n-grams (annotator.Distinct).
	Distinct1 float64 `json:"distinct1"`
	Distinct2 float64 `json:"distinct2"`
	// Fluency is the share of all the texts' words that are dictionary words (annotator.IsWord),
	// not counting the unfinished last word of a cut text; 0 when there is no word at all.
	Fluency float64 `json:"fluency"`
}

// textStats computes TextStats; tokens[i] is the length of texts[i] in model tokens and cut[i]
// whether the token budget stopped it (nil: none was).
func textStats(texts []string, tokens []int, cut []bool) TextStats {
	st := TextStats{Texts: len(texts)}
	if len(texts) == 0 {
		return st
	}
	words := 0
	for i, t := range texts {
		st.MeanTokens += float64(tokens[i])
		words += len(annotator.Words(t))
		if cut != nil && cut[i] {
			st.Cut++
		}
	}
	n := float64(len(texts))
	st.MeanTokens /= n
	st.MeanWords = float64(words) / n
	st.Distinct1 = annotator.Distinct(texts, 1)
	st.Distinct2 = annotator.Distinct(texts, 2)
	st.Fluency = fluency(texts, cut)
	return st
}

// fluency is the share of the words of all texts (annotator.Words) that are dictionary words
// (annotator.IsWord), pooled over the texts like distinct-n; 0 when there is no word. A text the
// token budget cut (cut[i]; cut may be nil) that ends inside a word leaves that last word out: it
// is a fragment of what the model was writing ("the serv"), not a word it wrote.
func fluency(texts []string, cut []bool) float64 {
	known, total := 0, 0
	for i, t := range texts {
		ws := annotator.Words(t)
		if cut != nil && cut[i] && endsInWord(t) {
			ws = ws[:len(ws)-1]
		}
		for _, w := range ws {
			total++
			if annotator.IsWord(w) {
				known++
			}
		}
	}
	if total == 0 {
		return 0
	}
	return float64(known) / float64(total)
}

// endsInWord reports whether text ends inside a word of annotator.Words: one more letter would
// extend its last word rather than start a new one.
func endsInWord(text string) bool {
	n := len(annotator.Words(text))
	return n > 0 && len(annotator.Words(text+"a")) == n
}

// responseTokens is the length of a generated response, its end-of-text token not counted.
func responseTokens(ids []int, eot int) int {
	if n := len(ids); n > 0 && ids[n-1] == eot {
		return n - 1
	}
	return len(ids)
}

// PairAccuracy is the implicit-reward accuracy of the policy after phase PolicyPhase on the
// preference pairs of phase PairsPhase. The implicit reward is
//
//	r(x, y) = log pi(y|x) - log pi_init(y|x)
//
// with pi the merged ensemble after phase PolicyPhase and pi_init the merged initial (SFT)
// ensemble, both scored as sequence log-probs of the response tokens (end-of-text included when
// the sampler drew it) by model.Inference: the same merged models and scoring as the eval stage's
// KL to the initial model, so the members are not scored separately. The accuracy is the
// fraction of pairs with r(chosen) > r(rejected), ties counting 1/2; beta does not change it.
//
// PolicyPhase = PairsPhase - 1 is the fresh-pair accuracy (the pairs were sampled by that very
// policy and it has not been trained on them); PolicyPhase = PairsPhase the train-pair accuracy.
type PairAccuracy struct {
	PolicyPhase int `json:"policyPhase"`
	PairsPhase  int `json:"pairsPhase"`
	Pairs       int `json:"pairs"`
	// Accuracy and MeanMargin (mean of r(chosen) - r(rejected), nats) are absent when the phase
	// kept no pair.
	Accuracy   *float64 `json:"accuracy,omitempty"`
	MeanMargin *float64 `json:"meanMargin,omitempty"`
	// The length confound, over the pairs whose responses differ in length (absent when none
	// do): RewardFollowsLength is the fraction where r(chosen) - r(rejected) has the sign of
	// len(chosen) - len(rejected) (ties 1/2), GoldPrefersLonger the fraction where the chosen
	// response is the longer. On a policy's own samples r grows with length (each token adds
	// its log-ratio, positive on average), so RewardFollowsLength well above GoldPrefersLonger
	// says the implicit reward ranks by length more than by what the annotator wants.
	RewardFollowsLength *float64 `json:"rewardFollowsLength,omitempty"`
	GoldPrefersLonger   *float64 `json:"goldPrefersLonger,omitempty"`
	// LengthBalanced is the mean of the accuracy on the pairs whose chosen response is the longer
	// and the accuracy on those whose chosen response is the shorter (absent unless both kinds
	// occur). Ranking by length alone scores 0.5 on it whatever the annotator's taste for length,
	// as does chance; so it is what the reward knows of the annotator's preference beyond length.
	LengthBalanced *float64 `json:"lengthBalanced,omitempty"`
}

// lengthBalancedAccuracy is PairAccuracy's LengthBalanced: (accuracy over pairs with
// lenC > lenR + accuracy over pairs with lenC < lenR) / 2, ties in the margin counting 1/2; ok is
// false unless both kinds of pair occur.
func lengthBalancedAccuracy(margin []float64, lenC, lenR []int) (acc float64, ok bool) {
	var right, n [2]float64 // [0]: chosen longer, [1]: chosen shorter
	for i, m := range margin {
		g := 0
		switch d := lenC[i] - lenR[i]; {
		case d == 0:
			continue
		case d < 0:
			g = 1
		}
		n[g]++
		switch {
		case m > 0:
			right[g]++
		case m == 0:
			right[g] += 0.5
		}
	}
	if n[0] == 0 || n[1] == 0 {
		return 0, false
	}
	return (right[0]/n[0] + right[1]/n[1]) / 2, true
}

// lengthConfound is PairAccuracy's RewardFollowsLength and GoldPrefersLonger of pairs with
// implicit-reward margins margin[i] and response lengths lenC[i], lenR[i] (tokens); ok is false
// when every pair's responses have the same length.
func lengthConfound(margin []float64, lenC, lenR []int) (follows, longer float64, ok bool) {
	n := 0
	for i, m := range margin {
		d := lenC[i] - lenR[i]
		if d == 0 {
			continue
		}
		n++
		if d > 0 {
			longer++
		}
		switch {
		case m == 0:
			follows += 0.5
		case (m > 0) == (d > 0):
			follows++
		}
	}
	if n == 0 {
		return 0, 0, false
	}
	return follows / float64(n), longer / float64(n), true
}

// pairRewardAccuracy is the accuracy and mean margin of the implicit reward
// r = policy log-prob - initial log-prob over pairs: polC[i], polR[i] are the policy's sequence
// log-probs of pair i's chosen and rejected responses, initC[i], initR[i] the initial model's.
// A pair counts 1 when r(chosen) > r(rejected), 1/2 on a tie, 0 otherwise.
func pairRewardAccuracy(polC, polR, initC, initR []float64) (acc, margin float64) {
	n := len(polC)
	if n == 0 {
		return 0, 0
	}
	for i := range n {
		rc, rr := polC[i]-initC[i], polR[i]-initR[i]
		switch {
		case rc > rr:
			acc++
		case rc == rr:
			acc += 0.5
		}
		margin += rc - rr
	}
	return acc / float64(n), margin / float64(n)
}

// DiagnosticsDir holds phase k's pair diagnostics.
func (w *Workspace) DiagnosticsDir(k int) string { return filepath.Join(w.PhaseDir(k), "diagnostics") }

// pairAccuracyPath is where the accuracy of policy j on phase k's pairs is kept.
func (w *Workspace) pairAccuracyPath(j, k int) string {
	name := "train-pairs.json"
	if j != k {
		name = "fresh-pairs.json"
	}
	return filepath.Join(w.DiagnosticsDir(k), name)
}

// FreshPairAccuracy is phase k's fresh-pair accuracy: the policy after phase k-1 on phase k's
// pairs, which it sampled and has not been trained on. Phase k's train stage (member 0) measures
// it before any step. It is undefined for phase 1, whose policy is the initial model itself
// (every reward is 0): nil there.
func (e *Env) FreshPairAccuracy(k int) (*PairAccuracy, error) {
	if k < 2 {
		return nil, nil
	}
	return e.pairAccuracy(k-1, k)
}

// TrainPairAccuracy is phase k's train-pair accuracy: the policy after phase k on phase k's
// pairs, after training on them. The eval stage of phase k or, when phase k has none, the next
// phase's train stage (member 0) measures it.
func (e *Env) TrainPairAccuracy(k int) (*PairAccuracy, error) {
	return e.pairAccuracy(k, k)
}

// pairAccuracy measures policy j on phase k's pairs once and keeps the result in the workspace
// (phase-<k>/diagnostics/{fresh,train}-pairs.json); later calls, in any stage, read it. The models
// are deterministic functions of finished stages, so whichever stage writes first writes the
// same numbers.
func (e *Env) pairAccuracy(j, k int) (*PairAccuracy, error) {
	if j < 1 || k < 1 || (j != k && j != k-1) {
		return nil, fmt.Errorf("pair accuracy of policy %d on phase %d's pairs: not a diagnostic", j, k)
	}
	path := e.WS.pairAccuracyPath(j, k)
	var pa PairAccuracy
	if err := readJSON(path, &pa); err == nil {
		return &pa, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%v: delete it to measure again", err)
	}
	pairs, err := e.PhasePairs(k)
	if err != nil {
		return nil, err
	}
	pa = PairAccuracy{PolicyPhase: j, PairsPhase: k, Pairs: len(pairs)}
	if len(pairs) > 0 {
		policy, err := e.Policy(j)
		if err != nil {
			return nil, err
		}
		initial, err := e.Policy(0)
		if err != nil {
			return nil, err
		}
		pol, err := pairLogps(policy, pairs)
		if err != nil {
			return nil, err
		}
		ini, err := pairLogps(initial, pairs)
		if err != nil {
			return nil, err
		}
		n := len(pairs)
		acc, margin := pairRewardAccuracy(pol[:n], pol[n:], ini[:n], ini[n:])
		pa.Accuracy, pa.MeanMargin = &acc, &margin
		margins, lenC, lenR := make([]float64, n), make([]int, n), make([]int, n)
		for i, p := range pairs {
			margins[i] = (pol[i] - ini[i]) - (pol[n+i] - ini[n+i])
			lenC[i], lenR[i] = len(p.ChosenIDs), len(p.RejectedIDs)
		}
		if follows, longer, ok := lengthConfound(margins, lenC, lenR); ok {
			pa.RewardFollowsLength, pa.GoldPrefersLonger = &follows, &longer
		}
		if bal, ok := lengthBalancedAccuracy(margins, lenC, lenR); ok {
			pa.LengthBalanced = &bal
		}
	}
	if err := writeJSONAtomic(path, pa); err != nil {
		return nil, err
	}
	return &pa, nil
}

// pairLogps scores the pairs' chosen then rejected responses under w (2n sequence log-probs).
// Both models of a diagnostic see the very same batch, so equal models give equal log-probs to
// the bit (a reward of exactly 0), whatever the float32 kernels' rounding.
func pairLogps(w *model.Weights, pairs []Pair) ([]float64, error) {
	n := len(pairs)
	prompts, responses := make([][]int, 2*n), make([][]int, 2*n)
	for i, p := range pairs {
		prompts[i], responses[i] = p.PromptIDs, p.ChosenIDs
		prompts[n+i], responses[n+i] = p.PromptIDs, p.RejectedIDs
	}
	lp, _, err := model.NewInference(w).SequenceLogProbs(prompts, responses)
	return lp, err
}

// spreadIndices picks want indices of [0, n) spread evenly, in increasing order: the middle of
// each of want equal strata (all of [0, n) when n <= want). The report's side-by-side
// completions use it, so every report of the same evaluation set shows the same prompts.
func spreadIndices(n, want int) []int {
	if want <= 0 || n <= 0 {
		return nil
	}
	if n <= want {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	out := make([]int, want)
	for i := range out {
		out[i] = (2*i + 1) * n / (2 * want)
	}
	return out
}
