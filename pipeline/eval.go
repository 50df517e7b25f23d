package pipeline

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/trainer/annotator"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/sample"
	"github.com/bpo-dev/bpo/trainer/task"
)

// EvalResult is phase k's evaluation, written to phase-<k>/eval/result.json.
type EvalResult struct {
	Phase   int    `json:"phase"`
	Split   string `json:"split"`
	Prompts int    `json:"prompts"`
	// Greedy decoding against the human references, judged by the gold annotator and by
	// the held-out evaluator the training annotator never saw.
	WinRate        float64 `json:"winRate"`
	TieRate        float64 `json:"tieRate"`
	HeldOutWinRate float64 `json:"heldOutWinRate"`
	GreedyReward   float64 `json:"greedyReward"`
	ReferenceScore float64 `json:"referenceReward"`
	// Sampled decoding (samplesPerPrompt per prompt at the sampler's temperature).
	Samples       int     `json:"samples"`
	GoldReward    float64 `json:"goldReward"`
	HeldOutReward float64 `json:"heldOutReward"`
	// KLToInitial is KL(policy || initial), estimated on the policy's own samples (nats/sequence).
	KLToInitial float64 `json:"klToInitial"`
	MeanLength  float64 `json:"meanLength"` // tokens per sampled response, end-of-text excluded
	Distinct1   float64 `json:"distinct1"`
	Distinct2   float64 `json:"distinct2"`
	// SampleFluency is the share of the samples' words that are dictionary words (as
	// TextStats.Fluency, leaving out a word the token budget cut): the text training learns
	// from, where a small model's junk shows more than in its greedy output. Absent in results
	// written before it existed.
	SampleFluency *float64 `json:"sampleFluency,omitempty"`
	// Greedy and References describe the greedy completions and the human references of the
	// same prompts (length, diversity, fluency), so that a reader can compare the two. Absent
	// in results written before they existed.
	Greedy     *TextStats `json:"greedy,omitempty"`
	References *TextStats `json:"references,omitempty"`
	// JudgeWinRate and JudgeTieRate are spec.evaluator.judge's verdicts on the greedy
	// completions against the human references (a win counts only when the completion won in
	// both orders); absent without a judge.
	JudgeWinRate *float64 `json:"judgeWinRate,omitempty"`
	JudgeTieRate *float64 `json:"judgeTieRate,omitempty"`
	// Annotation and JudgeAnnotation are what this evaluation spent on a remote gold annotator
	// and on the judge (absent when built in / absent).
	Annotation      *v1alpha1.AnnotationAccounting `json:"annotation,omitempty"`
	JudgeAnnotation *v1alpha1.AnnotationAccounting `json:"judgeAnnotation,omitempty"`
	// Examples is the legacy record of the first dozen greedy completions; results now keep
	// every prompt's completion in PerPrompt instead and leave it empty. Read both through
	// GreedyRecords.
	Examples []Example `json:"examples,omitempty"`
	// PerPrompt is one record per evaluated prompt, in prompt order: the greedy completion with
	// its scores (enough to re-judge the run with another evaluator) and the paired outcomes
	// that a bootstrap against another arm needs.
	PerPrompt []PromptOutcome `json:"perPrompt"`
}

// Example is one evaluation prompt with the greedy completion, for reports.
type Example struct {
	Prompt     string  `json:"prompt"`
	Completion string  `json:"completion"`
	Reference  string  `json:"reference"`
	Score      float64 `json:"score"`
	RefScore   float64 `json:"referenceScore"`
}

// PromptOutcome is the per-prompt record of an evaluation.
type PromptOutcome struct {
	// The prompt, its greedy completion and human reference. Empty in results written before
	// they were kept (those have the first dozen in EvalResult.Examples); a prompt is never empty.
	Prompt     string `json:"prompt,omitempty"`
	Completion string `json:"completion,omitempty"`
	Reference  string `json:"reference,omitempty"`

	Win        float64 `json:"win"` // 1 win, 0.5 tie, 0 loss (gold annotator, greedy)
	GoldReward float64 `json:"gold"`
	HeldOut    float64 `json:"heldOut"`
	// The reference's scores by the gold annotator and the held-out evaluator (what the greedy
	// completion's gold and heldOut are compared with). Pointers because older results lack them.
	RefGold    *float64 `json:"refGold,omitempty"`
	RefHeldOut *float64 `json:"refHeldOut,omitempty"`
	// Mean rewards of the prompt's samples: what the KL is measured on, so what a matched-KL
	// comparison is about. Pointers because results written before they existed lack them.
	SampleGold    *float64 `json:"sampleGold,omitempty"`
	SampleHeldOut *float64 `json:"sampleHeldOut,omitempty"`
	// Samples are the prompt's sampled completions (spec.evaluator.samplesPerPrompt, drawn with
	// spec.sampler's settings) and SampleScores their gold scores, kept like the greedy one so that
	// anyone can read or re-judge what the policy writes when it samples, which is what it was
	// trained on. Absent in results written before they were kept.
	Samples      []string  `json:"samples,omitempty"`
	SampleScores []float64 `json:"sampleScores,omitempty"`
	// JudgeWin is spec.evaluator.judge's outcome for the greedy completion against the
	// reference: 1 win, 0.5 tie, 0 loss (absent without a judge).
	JudgeWin *float64 `json:"judgeWin,omitempty"`
}

// GreedyRecords returns the evaluation's greedy completions with their gold scores, prompt by
// prompt: every evaluated prompt for results that keep them in PerPrompt, else the legacy
// Examples (the first dozen prompts).
func (r *EvalResult) GreedyRecords() []Example {
	if len(r.PerPrompt) == 0 || r.PerPrompt[0].Prompt == "" {
		return r.Examples
	}
	out := make([]Example, len(r.PerPrompt))
	for i, o := range r.PerPrompt {
		out[i] = Example{Prompt: o.Prompt, Completion: o.Completion, Reference: o.Reference, Score: o.GoldReward, RefScore: val(o.RefGold)}
	}
	return out
}

// EvalExamples are the held-out examples Eval uses: the first spec.budget.evalPrompts
// of the split (eval, or validation for choosing hyperparameters).
func (e *Env) EvalExamples() ([]task.Example, string, error) {
	t, err := e.Task()
	if err != nil {
		return nil, "", err
	}
	split := "eval"
	if e.EvalSplit == "validation" {
		split = "validation"
	}
	ex, err := EvalSplit(t, split, int(e.Run.Spec.Budget.EvalPrompts))
	return ex, split, err
}

// EvalSplit is the first n examples of task t's split ("eval" or "validation"), or an error
// naming spec.budget.evalPrompts when the split is shorter. Eval and the experiment runner (which
// checks every run before starting any) share it.
func EvalSplit(t *task.Task, split string, n int) ([]task.Example, error) {
	ex := t.Eval
	if split == "validation" {
		ex = t.Validation
	}
	if n > len(ex) {
		return nil, fmt.Errorf("spec.budget.evalPrompts is %d but the %s split of task %s has %d prompts: lower it", n, split, t.Name, len(ex))
	}
	return ex[:n], nil
}

// Eval evaluates the merged ensemble after phase k (k = 0: the initial model).
func (e *Env) Eval(k int) (v1alpha1.StageResult, error) {
	return e.once(k, v1alpha1.StageEval, -1, func(r *v1alpha1.StageResult) error {
		res, err := e.evaluate(k)
		if err != nil {
			return err
		}
		path := filepath.Join(e.WS.EvalDir(k), "result.json")
		if err := writeJSONAtomic(path, res); err != nil {
			return err
		}
		r.Checkpoint = e.WS.Rel(path)
		r.WinRate, r.GoldReward, r.KLToInitial = &res.WinRate, &res.GoldReward, &res.KLToInitial
		r.MeanLength, r.Distinct2 = &res.MeanLength, &res.Distinct2
		r.Samples = int64(res.Samples)
		r.JudgeWinRate, r.Annotation = res.JudgeWinRate, res.Annotation
		if res.Greedy != nil {
			r.Fluency = &res.Greedy.Fluency
		}
		if k >= 1 {
			// The policy's accuracy on the pairs it was just trained on (the initial model, k = 0,
			// has none). The next phase's train stage reuses the file.
			pa, err := e.TrainPairAccuracy(k)
			if err != nil {
				return err
			}
			r.TrainPairAccuracy = pa.Accuracy
		}
		return nil
	})
}

// LoadEval reads phase k's evaluation.
func (e *Env) LoadEval(k int) (*EvalResult, error) {
	var res EvalResult
	if err := readJSON(filepath.Join(e.WS.EvalDir(k), "result.json"), &res); err != nil {
		return nil, err
	}
	return &res, nil
}

func (e *Env) evaluate(k int) (*EvalResult, error) {
	b, err := e.LoadBase()
	if err != nil {
		return nil, err
	}
	examples, split, err := e.EvalExamples()
	if err != nil {
		return nil, err
	}
	policy, err := e.Policy(k)
	if err != nil {
		return nil, err
	}
	initial, err := e.Policy(0)
	if err != nil {
		return nil, err
	}
	gold, err := e.Annotator(k, v1alpha1.StageEval, 0)
	if err != nil {
		return nil, err
	}
	judge, err := e.EvalJudge(k)
	if err != nil {
		return nil, err
	}
	heldOut := annotator.NewClassifier()
	maxNew := int(e.Run.Spec.Sampler.MaxNewTokens)
	ids := make([][]int, len(examples))
	for i, ex := range examples {
		if ids[i], err = encodePrompt(b.Tok, b.Weights.Config, ex.Prompt, maxNew); err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
	}
	inf := model.NewInference(policy)
	res := &EvalResult{Phase: k, Split: split, Prompts: len(examples)}

	greedyOpt := sample.Options{Greedy: true, MaxNewTokens: maxNew, EOT: b.Tok.EOT()}
	greedy, ended, err := e.generate(v1alpha1.StageEval, inf, ids, 1, greedyOpt, 0)
	if err != nil {
		return nil, err
	}
	// The annotator scores in batches (one request per batch for a remote one): the greedy
	// output and the human reference of each prompt, then every sample.
	greedyItems := make([]annotator.Item, len(examples))
	for i, ex := range examples {
		greedyItems[i] = annotator.Item{Prompt: ex.Prompt, Responses: []string{decode(b.Tok, greedy[i]), ex.Reference}}
	}
	greedyScores, err := gold.ScoreBatch(context.Background(), greedyItems)
	if err != nil {
		return nil, fmt.Errorf("eval: spec.labeler.annotator: %w", err)
	}
	n := float64(len(examples))
	greedyTexts, refTexts := make([]string, len(examples)), make([]string, len(examples))
	greedyTokens, refTokens := make([]int, len(examples)), make([]int, len(examples))
	cut := make([]bool, len(examples))
	for i, ex := range examples {
		text := greedyItems[i].Responses[0]
		greedyTexts[i], refTexts[i], cut[i] = text, ex.Reference, !ended[i]
		greedyTokens[i], refTokens[i] = responseTokens(greedy[i], b.Tok.EOT()), len(b.Tok.Encode(ex.Reference))
		s, rs := greedyScores[i][0], greedyScores[i][1]
		h, rh := heldOut.Score(ex.Prompt, text), heldOut.Score(ex.Prompt, ex.Reference)
		o := PromptOutcome{Prompt: ex.Prompt, Completion: text, Reference: ex.Reference,
			GoldReward: s, HeldOut: h, RefGold: &rs, RefHeldOut: &rh}
		switch {
		case s > rs:
			o.Win = 1
			res.WinRate += 1 / n
		case s == rs:
			o.Win = 0.5
			res.TieRate += 1 / n
		}
		if h > rh {
			res.HeldOutWinRate += 1 / n
		}
		res.GreedyReward += s / n
		res.ReferenceScore += rs / n
		res.PerPrompt = append(res.PerPrompt, o)
	}
	if judge != nil {
		if err := judgeGreedy(judge, greedyItems, res); err != nil {
			return nil, err
		}
	}
	greedyStats, refStats := textStats(greedyTexts, greedyTokens, cut), textStats(refTexts, refTokens, nil)
	res.Greedy, res.References = &greedyStats, &refStats

	per := int(max(e.Run.Spec.Evaluator.SamplesPerPrompt, 1))
	opt := e.samplerOptions(b.Tok, e.streamSeed("eval", k))
	samples, sampleEnded, err := e.generate(v1alpha1.StageEval, inf, ids, per, opt, 0)
	if err != nil {
		return nil, err
	}
	rowPrompts := make([][]int, len(samples))
	texts := make([]string, len(samples))
	sampleCut := make([]bool, len(samples))
	for i := range samples {
		rowPrompts[i] = ids[i/per]
		texts[i] = decode(b.Tok, samples[i])
		sampleCut[i] = !sampleEnded[i]
	}
	sampleFluency := fluency(texts, sampleCut)
	res.SampleFluency = &sampleFluency
	lp, _, err := inf.SequenceLogProbs(rowPrompts, samples)
	if err != nil {
		return nil, err
	}
	lpInit, _, err := model.NewInference(initial).SequenceLogProbs(rowPrompts, samples)
	if err != nil {
		return nil, err
	}
	sampleItems := make([]annotator.Item, len(examples))
	for i, ex := range examples {
		sampleItems[i] = annotator.Item{Prompt: ex.Prompt, Responses: texts[i*per : (i+1)*per]}
	}
	sampleScores, err := gold.ScoreBatch(context.Background(), sampleItems)
	if err != nil {
		return nil, fmt.Errorf("eval: spec.labeler.annotator: %w", err)
	}
	res.Annotation = gold.Spent()
	m := float64(len(samples))
	sg, sh := make([]float64, len(examples)), make([]float64, len(examples))
	for i, text := range texts {
		p := examples[i/per].Prompt
		g, h := sampleScores[i/per][i%per], heldOut.Score(p, text)
		res.GoldReward += g / m
		res.HeldOutReward += h / m
		sg[i/per] += g / float64(per)
		sh[i/per] += h / float64(per)
		res.KLToInitial += (lp[i] - lpInit[i]) / m
		res.MeanLength += float64(responseTokens(samples[i], b.Tok.EOT())) / m
	}
	for j := range res.PerPrompt {
		res.PerPrompt[j].SampleGold, res.PerPrompt[j].SampleHeldOut = &sg[j], &sh[j]
		res.PerPrompt[j].Samples = texts[j*per : (j+1)*per]
		res.PerPrompt[j].SampleScores = sampleScores[j]
	}
	res.Samples = len(samples)
	res.Distinct1 = annotator.Distinct(texts, 1)
	res.Distinct2 = annotator.Distinct(texts, 2)
	return res, nil
}

// judgeGreedy has spec.evaluator.judge compare each greedy completion with its human reference
// (items [completion, reference]) and records the outcomes in res.
func judgeGreedy(judge *Scoring, items []annotator.Item, res *EvalResult) error {
	scores, err := judge.ScoreBatch(context.Background(), items)
	if err != nil {
		return fmt.Errorf("eval: spec.evaluator.judge: %w", err)
	}
	var win, tie float64
	n := float64(len(items))
	for i, s := range scores {
		w := 0.0
		switch {
		case s[0] > s[1]:
			w, win = 1, win+1/n
		case s[0] == s[1]:
			w, tie = 0.5, tie+1/n
		}
		res.PerPrompt[i].JudgeWin = &w
	}
	res.JudgeWinRate, res.JudgeTieRate, res.JudgeAnnotation = &win, &tie, judge.Spent()
	return nil
}
