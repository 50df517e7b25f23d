package pipeline

import (
	"fmt"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Report is what WriteReport produced.
type Report struct {
	// Summary is a few lines comparing the initial model and the final policy.
	Summary string
	Files   []string
}

// WriteReport writes report.md and PNG plots of win rate and KL per phase into the
// run's workspace folder, from the phase summaries and the stored evaluations.
func (e *Env) WriteReport(sums []PhaseSummary) (*Report, error) {
	base, err := e.LoadEval(0)
	if err != nil {
		return nil, fmt.Errorf("report: baseline evaluation: %w", err)
	}
	final, err := e.LoadEval(e.Run.Phases())
	if err != nil {
		return nil, fmt.Errorf("report: final evaluation: %w", err)
	}
	rep := &Report{}
	rep.Summary = fmt.Sprintf(
		"win rate vs human references: %.3f -> %.3f (held-out evaluator %.3f -> %.3f)\n"+
			"gold reward of samples: %.3f -> %.3f, KL to initial %.2f nats, mean length %.1f -> %.1f tokens, distinct-2 %.3f -> %.3f",
		base.WinRate, final.WinRate, base.HeldOutWinRate, final.HeldOutWinRate,
		base.GoldReward, final.GoldReward, final.KLToInitial, base.MeanLength, final.MeanLength, base.Distinct2, final.Distinct2)
	cs := changes(base, final)
	if line := changeSummary(cs); line != "" {
		rep.Summary += "\n" + line
	}
	if line := diagnosticsSummary(sums, base, final); line != "" {
		rep.Summary += "\n" + line
	}

	var b strings.Builder
	fmt.Fprintf(&b, "# Alignment report: %s\n\n", e.Run.Name)
	fmt.Fprintf(&b, "Recipe: %s. Evaluated on %d held-out `%s` prompts (greedy decoding for win rates, %d sample(s) per prompt for rewards, KL and diversity).\n\n",
		e.Run.Describe(), final.Prompts, final.Split, max(final.Samples/max(final.Prompts, 1), 1))
	b.WriteString("## Initial model vs final policy\n\n")
	b.WriteString("| metric | initial | final |\n|---|---|---|\n")
	row := func(name string, a, c float64, format string) {
		fmt.Fprintf(&b, "| %s | "+format+" | "+format+" |\n", name, a, c)
	}
	row("win rate vs human reference (gold annotator)", base.WinRate, final.WinRate, "%.3f")
	row("win rate vs human reference (held-out evaluator)", base.HeldOutWinRate, final.HeldOutWinRate, "%.3f")
	row("tie rate", base.TieRate, final.TieRate, "%.3f")
	row("gold reward of samples", base.GoldReward, final.GoldReward, "%.3f")
	row("held-out reward of samples", base.HeldOutReward, final.HeldOutReward, "%.3f")
	row("greedy gold reward (reference: "+fmt.Sprintf("%.3f", final.ReferenceScore)+")", base.GreedyReward, final.GreedyReward, "%.3f")
	row("KL to initial model (nats/sequence)", base.KLToInitial, final.KLToInitial, "%.2f")
	row("mean response length (tokens)", base.MeanLength, final.MeanLength, "%.1f")
	row("distinct-1", base.Distinct1, final.Distinct1, "%.3f")
	row("distinct-2", base.Distinct2, final.Distinct2, "%.3f")
	if base.SampleFluency != nil && final.SampleFluency != nil {
		row("fluency of samples (dictionary words)", *base.SampleFluency, *final.SampleFluency, "%.3f")
	}
	writeChanges(&b, cs)

	b.WriteString("\n## Per phase\n\n")
	b.WriteString("Training metrics are over each phase's pairs after training (means over ensemble members); " +
		"kl(ref) is KL(behavior || learner) on the phase's samples, which is the KL to the reference for BPO.\n\n")
	b.WriteString("| phase | samples | pairs | ties | identical | loss | reward acc | margin | kl(ref) | win rate | gold reward | KL to initial | seconds |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range sums {
		win, rew, kl := "", "", ""
		if s.Evaluated {
			win, rew, kl = fmt.Sprintf("%.3f", s.WinRate), fmt.Sprintf("%.3f", s.GoldReward), fmt.Sprintf("%.2f", s.KLToInit)
		}
		fmt.Fprintf(&b, "| %d | %d | %d | %d | %d | %.4f | %.3f | %.3f | %.3f | %s | %s | %s | %.0f |\n",
			s.Phase, s.Samples, s.Pairs, s.Ties, s.Identical, s.Loss, s.Accuracy, s.Margin, s.KLToRef, win, rew, kl, s.Seconds)
	}
	evals, err := e.phaseEvals(sums)
	if err != nil {
		return nil, err
	}
	writeDiagnostics(&b, sums, base, evals)
	writeAnnotation(&b, sums, base, evals)

	plots, err := e.writePlots(sums, base)
	if err != nil {
		return nil, err
	}
	rep.Files = append(rep.Files, plots...)
	b.WriteString("\n")
	for _, p := range plots {
		fmt.Fprintf(&b, "![%s](%s)\n", strings.TrimSuffix(p, ".png"), p)
	}

	writeSideBySide(&b, base, final)
	if err := writeFileAtomic(filepath.Join(e.WS.Root, "report.md"), []byte(b.String())); err != nil {
		return nil, err
	}
	rep.Files = append(rep.Files, "report.md")
	return rep, nil
}

func mdCell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\n", " ")
	if strings.TrimSpace(s) == "" {
		return "(empty)"
	}
	return s
}

// writePlots draws win rate and KL against the phase (phase 0 = the initial model).
func (e *Env) writePlots(sums []PhaseSummary, base *EvalResult) ([]string, error) {
	win := plotter.XYs{{X: 0, Y: base.WinRate}}
	heldOut := plotter.XYs{{X: 0, Y: base.HeldOutWinRate}}
	klInit := plotter.XYs{{X: 0, Y: base.KLToInitial}}
	klRef := plotter.XYs{}
	for _, s := range sums {
		klRef = append(klRef, plotter.XY{X: float64(s.Phase), Y: s.KLToRef})
		if s.Evaluated {
			ev, err := e.LoadEval(s.Phase)
			if err != nil {
				return nil, err
			}
			win = append(win, plotter.XY{X: float64(s.Phase), Y: ev.WinRate})
			heldOut = append(heldOut, plotter.XY{X: float64(s.Phase), Y: ev.HeldOutWinRate})
			klInit = append(klInit, plotter.XY{X: float64(s.Phase), Y: ev.KLToInitial})
		}
	}
	var files []string
	draw := func(file, title, ylabel string, series ...any) error {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text = "phase (0 = initial model)"
		p.Y.Label.Text = ylabel
		p.Legend.Top, p.Legend.Left = true, true
		if err := plotutil.AddLinePoints(p, series...); err != nil {
			return err
		}
		files = append(files, file)
		return p.Save(5*vg.Inch, 3.5*vg.Inch, filepath.Join(e.WS.Root, file))
	}
	if err := draw("winrate.png", "Win rate against human references", "win rate",
		"gold annotator", win, "held-out evaluator", heldOut); err != nil {
		return nil, err
	}
	if err := draw("kl.png", "KL per phase", "nats / sequence",
		"KL(policy || initial)", klInit, "KL(behavior || learner), end of phase", klRef); err != nil {
		return nil, err
	}
	return files, nil
}

// sideBySideExamples is the number of prompts whose greedy completions the report shows.
const sideBySideExamples = 12

// writeSideBySide writes the initial model's and the final policy's greedy completions of the
// same prompts next to the human reference: a dozen prompts spread evenly over the evaluation set
// (spreadIndices), so that every report over the same prompts shows the same ones. Results from
// before every completion was kept have only the first dozen, which are then the ones shown.
func writeSideBySide(b *strings.Builder, base, final *EvalResult) {
	bg, fg := base.GreedyRecords(), final.GreedyRecords()
	idx := spreadIndices(min(len(bg), len(fg)), sideBySideExamples)
	b.WriteString("\n## Sample completions (greedy)\n\n")
	fmt.Fprintf(b, "%d of the %d evaluation prompts, spread evenly (# is the prompt's index in `perPrompt` of "+
		"phase-<k>/eval/result.json, which keeps every prompt's completion); the gold annotator's score in parentheses.\n\n",
		len(idx), final.Prompts)
	b.WriteString("| # | prompt | initial model | final policy | human reference |\n|---|---|---|---|---|\n")
	for _, i := range idx {
		bi, fi := bg[i], fg[i]
		if bi.Prompt != fi.Prompt {
			continue // evaluations of different prompt sets: nothing to compare
		}
		fmt.Fprintf(b, "| %d | %s | %s (%.2f) | %s (%.2f) | %s (%.2f) |\n",
			i, mdCell(fi.Prompt), mdCell(bi.Completion), bi.Score, mdCell(fi.Completion), fi.Score, mdCell(fi.Reference), fi.RefScore)
	}
	writeSampledSideBySide(b, base, final, idx)
}

// writeSampledSideBySide writes, for the same prompts, the first sampled completion of the
// initial model and of the final policy: greedy decoding of a small model collapses to a few
// generic sentences, while samples are what the policy was trained on and what the sample rewards
// and the KL measure. Results that predate kept samples have none, and the table is left out.
func writeSampledSideBySide(b *strings.Builder, base, final *EvalResult, idx []int) {
	var rows []string
	for _, i := range idx {
		if i >= len(base.PerPrompt) || i >= len(final.PerPrompt) {
			continue
		}
		bi, fi := base.PerPrompt[i], final.PerPrompt[i]
		if bi.Prompt != fi.Prompt || len(bi.Samples) == 0 || len(fi.Samples) == 0 ||
			len(bi.SampleScores) != len(bi.Samples) || len(fi.SampleScores) != len(fi.Samples) {
			continue
		}
		rows = append(rows, fmt.Sprintf("| %d | %s | %s (%.2f) | %s (%.2f) |\n",
			i, mdCell(fi.Prompt), mdCell(bi.Samples[0]), bi.SampleScores[0], mdCell(fi.Samples[0]), fi.SampleScores[0]))
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("\n## Sampled completions\n\n")
	b.WriteString("The same prompts, the first of each prompt's evaluation samples (drawn with spec.sampler's settings, as the " +
		"training pairs are; every sample is in `perPrompt[].samples`); the gold annotator's score in parentheses.\n\n")
	b.WriteString("| # | prompt | initial model | final policy |\n|---|---|---|---|\n")
	for _, r := range rows {
		b.WriteString(r)
	}
}

// phaseEvals loads the evaluation of every evaluated phase.
func (e *Env) phaseEvals(sums []PhaseSummary) (map[int]*EvalResult, error) {
	out := map[int]*EvalResult{}
	for _, s := range sums {
		if !s.Evaluated {
			continue
		}
		ev, err := e.LoadEval(s.Phase)
		if err != nil {
			return nil, err
		}
		out[s.Phase] = ev
	}
	return out, nil
}

func fmtOpt(v *float64, format string) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf(format, *v)
}

// writeDiagnostics writes the per-phase pair accuracies and the greedy completions' text
// statistics next to the human references'.
func writeDiagnostics(b *strings.Builder, sums []PhaseSummary, base *EvalResult, evals map[int]*EvalResult) {
	b.WriteString("\n## Diagnostics\n\n")
	b.WriteString("Implicit reward r(x,y) = log π(y|x) − log π_init(y|x), with π a merged ensemble and π_init the merged initial (SFT) " +
		"ensemble (the models and sequence log-probs of the KL to initial). **Fresh-pair accuracy** of phase k: the fraction of phase k's " +
		"pairs (ties 1/2) with r(chosen) > r(rejected) under the policy after phase k−1, which sampled them and was never trained on them; " +
		"phase 1 has none (its policy is the initial model, every reward 0). **Train-pair accuracy**: the same under the policy after " +
		"phase k, on the pairs it was just trained on. **Gap**: train-pair accuracy of phase k−1 minus fresh-pair accuracy of phase k, " +
		"one policy on the pairs it saw and on new ones. Unlike *reward acc* above (each member against the phase's reference), " +
		"these score the merged policy against the initial model. **r follows length**: on the fresh pairs whose responses differ in length, " +
		"the fraction where r ranks the longer one higher; **gold prefers longer**: the fraction where the chosen one is the longer. " +
		"A policy's reward on its own samples grows with length, so the first well above the second means r ranks by length more than by " +
		"what the annotator wants. **Length-balanced**: the mean of the fresh-pair accuracy on pairs whose chosen response is the longer " +
		"and on pairs whose chosen response is the shorter; ranking by length alone scores 0.5 on it, as does chance, so it is what r " +
		"knows of the annotator beyond length.\n\n")
	guard := false
	for _, s := range sums {
		guard = guard || s.GuardDecided != nil
	}
	b.WriteString("| phase | pairs | fresh-pair accuracy | train-pair accuracy | gap | r follows length | gold prefers longer | length-balanced |")
	if guard {
		b.WriteString(" guard-decided |")
	}
	b.WriteString("\n|---|---|---|---|---|---|---|---|")
	if guard {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	var prevTrain *float64
	for _, s := range sums {
		gap := "–"
		if prevTrain != nil && s.FreshPairAccuracy != nil {
			gap = fmt.Sprintf("%+.3f", *prevTrain-*s.FreshPairAccuracy)
		}
		fmt.Fprintf(b, "| %d | %d | %s | %s | %s | %s | %s | %s |", s.Phase, s.Pairs, fmtOpt(s.FreshPairAccuracy, "%.3f"), fmtOpt(s.TrainPairAccuracy, "%.3f"), gap,
			fmtOpt(s.FreshRewardFollowsLength, "%.3f"), fmtOpt(s.FreshGoldPrefersLonger, "%.3f"), fmtOpt(s.FreshLengthBalanced, "%.3f"))
		if guard {
			fmt.Fprintf(b, " %s |", fmtOpt(s.GuardDecided, "%.3f"))
		}
		b.WriteString("\n")
		prevTrain = s.TrainPairAccuracy
	}

	if base.References == nil {
		return // an evaluation from before the text statistics
	}
	fmt.Fprintf(b, "\nGreedy completions of the %d evaluation prompts and the human references of the same prompts. "+
		"Words are annotator.Words tokens; distinct-n counts distinct word n-grams; fluency is the share of words "+
		"that are dictionary words (annotator.IsWord), leaving out the unfinished last word of a completion the token "+
		"budget cut (*cut*: how many it cut).\n\n", base.Prompts)
	b.WriteString("| text | mean tokens | mean words | distinct-1 | distinct-2 | fluency | cut |\n|---|---|---|---|---|---|---|\n")
	row := func(name string, t *TextStats) {
		if t != nil {
			fmt.Fprintf(b, "| %s | %.1f | %.1f | %.3f | %.3f | %.3f | %d |\n", name, t.MeanTokens, t.MeanWords, t.Distinct1, t.Distinct2, t.Fluency, t.Cut)
		}
	}
	row("human references", base.References)
	row("initial model", base.Greedy)
	for _, s := range sums {
		if ev := evals[s.Phase]; ev != nil {
			row(fmt.Sprintf("policy after phase %d", s.Phase), ev.Greedy)
		}
	}
}

// diagnosticsSummary is the summary's lines on the diagnostics ("" when there are none).
func diagnosticsSummary(sums []PhaseSummary, base, final *EvalResult) string {
	var parts []string
	if base.Greedy != nil && final.Greedy != nil && final.References != nil {
		parts = append(parts, fmt.Sprintf("greedy fluency %.3f -> %.3f, %.1f -> %.1f words (human references %.3f, %.1f words)",
			base.Greedy.Fluency, final.Greedy.Fluency, base.Greedy.MeanWords, final.Greedy.MeanWords, final.References.Fluency, final.References.MeanWords))
		if base.SampleFluency != nil && final.SampleFluency != nil {
			parts[len(parts)-1] += fmt.Sprintf("; fluency of samples %.3f -> %.3f", *base.SampleFluency, *final.SampleFluency)
		}
	}
	var acc []string
	for _, s := range sums {
		var p []string
		if s.FreshPairAccuracy != nil {
			p = append(p, fmt.Sprintf("fresh %.3f", *s.FreshPairAccuracy))
			if s.FreshLengthBalanced != nil {
				p[len(p)-1] += fmt.Sprintf(" (length-balanced %.3f)", *s.FreshLengthBalanced)
			}
		}
		if s.TrainPairAccuracy != nil {
			p = append(p, fmt.Sprintf("train %.3f", *s.TrainPairAccuracy))
		}
		if len(p) > 0 {
			acc = append(acc, fmt.Sprintf("phase %d %s", s.Phase, strings.Join(p, " ")))
		}
	}
	if len(acc) > 0 {
		parts = append(parts, "implicit-reward accuracy on pairs: "+strings.Join(acc, ", "))
	}
	return strings.Join(parts, "\n")
}
