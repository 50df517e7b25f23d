package pipeline

import (
	"fmt"
	"strings"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// writeAnnotation writes what remote annotators cost and said, when the run used one: per phase,
// the label stage's judged pairs, ties, invalid answers, position-flip rate, requests, tokens
// and cache hits; and the evaluator judge's win rate against the references per evaluation.
func writeAnnotation(b *strings.Builder, sums []PhaseSummary, base *EvalResult, evals map[int]*EvalResult) {
	labelled := false
	for _, s := range sums {
		labelled = labelled || s.Annotation != nil
	}
	judged := base.JudgeWinRate != nil
	for _, ev := range evals {
		judged = judged || (ev != nil && ev.JudgeWinRate != nil)
	}
	if !labelled && !judged {
		return
	}
	b.WriteString("\n## Annotation\n\n")
	if labelled {
		b.WriteString("What the label stage asked of spec.labeler.annotator. A judge asks every pair in both orders; a pair whose " +
			"two verdicts differ is a *position flip* and a tie, as is a pair whose answer stayed unreadable (*invalid*). " +
			"Requests include retries; *cache hits* are verdicts a retried stage read back instead of asking again.\n\n")
		b.WriteString("| phase | judged pairs | ties | invalid | position-flip rate | texts scored | requests | prompt tokens | completion tokens | cache hits |\n" +
			"|---|---|---|---|---|---|---|---|---|---|\n")
		var total v1alpha1.AnnotationAccounting
		for _, s := range sums {
			if a := s.Annotation; a != nil {
				total.Add(*a)
				writeAccountingRow(b, fmt.Sprint(s.Phase), *a)
			}
		}
		if len(sums) > 1 {
			writeAccountingRow(b, "all", total)
		}
	}
	if judged {
		b.WriteString("\nspec.evaluator.judge on the greedy completions against the human references (a win needs both orders):\n\n")
		b.WriteString("| model | judge win rate | judge tie rate | requests | tokens |\n|---|---|---|---|---|\n")
		row := func(name string, ev *EvalResult) {
			if ev == nil || ev.JudgeWinRate == nil {
				return
			}
			var a v1alpha1.AnnotationAccounting
			if ev.JudgeAnnotation != nil {
				a = *ev.JudgeAnnotation
			}
			fmt.Fprintf(b, "| %s | %.3f | %s | %d | %d |\n", name, *ev.JudgeWinRate, fmtOpt(ev.JudgeTieRate, "%.3f"), a.Requests, a.PromptTokens+a.CompletionTokens)
		}
		row("initial model", base)
		for _, s := range sums {
			row(fmt.Sprintf("policy after phase %d", s.Phase), evals[s.Phase])
		}
	}
}

func writeAccountingRow(b *strings.Builder, phase string, a v1alpha1.AnnotationAccounting) {
	flips := "–"
	if a.Pairs > 0 {
		flips = fmt.Sprintf("%.3f", float64(a.PositionFlips)/float64(a.Pairs))
	}
	fmt.Fprintf(b, "| %s | %d | %d | %d | %s | %d | %d | %d | %d | %d |\n", phase, a.Pairs, a.Ties, a.Invalid, flips, a.Texts,
		a.Requests, a.PromptTokens, a.CompletionTokens, a.CacheHits)
}
