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

	plots, err := e.writePlots(sums, base)
	if err != nil {
		return nil, err
	}
	rep.Files = append(rep.Files, plots...)
	b.WriteString("\n")
	for _, p := range plots {
		fmt.Fprintf(&b, "![%s](%s)\n", strings.TrimSuffix(p, ".png"), p)
	}

	b.WriteString("\n## Sample completions (greedy)\n\n")
	b.WriteString("| prompt | initial model | final policy | human reference |\n|---|---|---|---|\n")
	for i := range min(len(base.Examples), len(final.Examples)) {
		bi, fi := base.Examples[i], final.Examples[i]
		fmt.Fprintf(&b, "| %s | %s (%.2f) | %s (%.2f) | %s (%.2f) |\n",
			mdCell(fi.Prompt), mdCell(bi.Completion), bi.Score, mdCell(fi.Completion), fi.Score, mdCell(fi.Reference), fi.RefScore)
	}
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
