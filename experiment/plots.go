package experiment

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/experiment/stats"
)

type pseries struct {
	name    string
	x, y, e []float64 // e: std (error bar half-length), may be nil
}

func (s pseries) xys() plotter.XYs {
	xy := make(plotter.XYs, len(s.x))
	for i := range s.x {
		xy[i] = plotter.XY{X: s.x[i], Y: s.y[i]}
	}
	return xy
}

// addSeries draws series i as a line with points (and error bars when e is set).
func addSeries(p *plot.Plot, i int, s pseries) error {
	if len(s.x) == 0 {
		return nil
	}
	l, pts, err := plotter.NewLinePoints(s.xys())
	if err != nil {
		return err
	}
	l.Color, l.Dashes = plotutil.Color(i), plotutil.Dashes(i)
	pts.Color, pts.Shape = plotutil.Color(i), plotutil.Shape(i)
	p.Add(l, pts)
	p.Legend.Add(s.name, l, pts)
	if s.e != nil {
		errs := make(plotter.YErrors, len(s.e))
		for j, e := range s.e {
			if math.IsNaN(e) {
				e = 0
			}
			errs[j].Low, errs[j].High = e, e
		}
		eb := &plotter.YErrorBars{XYs: s.xys(), YErrors: errs, LineStyle: plotter.DefaultLineStyle, CapWidth: plotter.DefaultCapWidth}
		eb.LineStyle.Color = plotutil.Color(i)
		p.Add(eb)
	}
	return nil
}

// legendRoom raises the top of the y axis so that the legend (top left) sits above the data.
func legendRoom(p *plot.Plot, entries int) {
	if span := p.Y.Max - p.Y.Min; span > 0 {
		p.Y.Max += span * (0.08*float64(entries) + 0.05)
	}
}

// jitter shifts series i of n sideways by a small fraction of the x range, so that error bars
// at the same x do not hide each other.
func jitter(xs []float64, i, n int, width float64) []float64 {
	out := make([]float64, len(xs))
	for j, x := range xs {
		out[j] = x + width*(float64(i)-float64(n-1)/2)
	}
	return out
}

func newPlot(title, xl, yl string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, xl, yl
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	return p
}

// family are the arms that differ from the baseline only in the trust-region schedule
// (reference, F, EMA alpha): the "win rate vs F" curves.
func (rep *Report) family() []ArmStats {
	base := rep.arm(rep.Baseline)
	strip := func(s v1alpha1.AlignmentRunSpec) v1alpha1.AlignmentRunSpec {
		s.TrustRegion, s.Workspace, s.Seed = v1alpha1.TrustRegionSpec{}, v1alpha1.WorkspaceSpec{}, nil
		return s
	}
	want := strip(base.runs[0].Spec)
	var out []ArmStats
	for _, st := range rep.Arms {
		if len(st.runs) > 0 && reflect.DeepEqual(strip(st.runs[0].Spec), want) {
			out = append(out, st)
		}
	}
	return out
}

func scheduleName(st ArmStats) string {
	switch {
	case st.Reference == string(v1alpha1.ReferenceInitial):
		return "fixed reference (Initial)"
	case st.Reference == string(v1alpha1.ReferenceBehavior):
		return "BPO (Behavior)"
	}
	return st.Reference
}

// scheduleSeries groups the family by reference schedule, x = log2 F. At F = 1 every schedule
// but Fixed is the same run (the reference is the initial model), so F = 1 arms join every curve.
func (rep *Report) scheduleSeries(y func(ArmStats) stats.Stat) ([]pseries, []float64) {
	fam := rep.family()
	groups := map[string][]ArmStats{}
	var order []string
	var offline []ArmStats
	fs := map[float64]bool{}
	for _, st := range fam {
		fs[float64(st.Phases)] = true
		if st.Phases == 1 && !strings.HasPrefix(st.Reference, string(v1alpha1.ReferenceFixed)) {
			offline = append(offline, st)
			continue
		}
		n := scheduleName(st)
		if _, ok := groups[n]; !ok {
			order = append(order, n)
		}
		groups[n] = append(groups[n], st)
	}
	if len(order) == 0 && len(offline) > 0 {
		order = append(order, "offline")
	}
	var out []pseries
	for _, n := range order {
		arms := append(slices.Clone(offline[:min(len(offline), 1)]), groups[n]...)
		sort.SliceStable(arms, func(i, j int) bool { return arms[i].Phases < arms[j].Phases })
		s := pseries{name: n}
		for _, st := range arms {
			v := y(st)
			s.x = append(s.x, math.Log2(float64(st.Phases)))
			s.y, s.e = append(s.y, v.Mean), append(s.e, v.Std)
		}
		out = append(out, s)
	}
	var ticks []float64
	for f := range fs {
		ticks = append(ticks, f)
	}
	sort.Float64s(ticks)
	return out, ticks
}

func fTicks(fs []float64) plot.ConstantTicks {
	var t plot.ConstantTicks
	for _, f := range fs {
		t = append(t, plot.Tick{Value: math.Log2(f), Label: fmt.Sprintf("%g", f)})
	}
	return t
}

// writeExperimentPlots writes the PNGs into dir and returns their paths.
func (rep *Report) writeExperimentPlots(dir string) ([]string, error) {
	var files []string
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	save := func(p *plot.Plot, name string) error {
		path := filepath.Join(dir, name)
		if err := p.Save(6*vg.Inch, 4*vg.Inch, path); err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		files = append(files, path)
		return nil
	}
	// Win rate and gold reward vs F, one curve per reference schedule.
	for _, c := range []struct {
		file, title, yl string
		y               func(ArmStats) stats.Stat
	}{
		{"winrate_vs_f.png", "Win rate vs human references, by F", "win rate (gold annotator)", func(s ArmStats) stats.Stat { return s.WinRate }},
		{"reward_vs_f.png", "Gold reward of samples, by F", "gold reward", func(s ArmStats) stats.Stat { return s.GoldReward }},
	} {
		series, fs := rep.scheduleSeries(c.y)
		if len(series) == 0 {
			continue
		}
		p := newPlot(c.title+" (mean ± std over seeds)", "F (data-collection phases; same annotation budget)", c.yl)
		for i, s := range series {
			s.x = jitter(s.x, i, len(series), 0.03)
			if err := addSeries(p, i, s); err != nil {
				return nil, err
			}
		}
		legendRoom(p, len(series))
		p.X.Tick.Marker = fTicks(fs)
		if err := save(p, c.file); err != nil {
			return nil, err
		}
	}

	var mains []ArmStats
	for _, st := range rep.Arms {
		if st.Main && len(st.runs) > 0 {
			mains = append(mains, st)
		}
	}
	// Reward-KL frontiers of the main arms: every evaluated point of every run, and the
	// mean over seeds of the runs' frontiers up to the smallest max KL of the arm's runs.
	p := newPlot("Reward-KL frontiers (mean over seeds; dots: every evaluation)", "KL(policy ‖ initial), nats / sequence", "gold reward of samples")
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for i, st := range mains {
		var pts plotter.XYs
		reach := math.Inf(1)
		for _, r := range st.runs {
			for _, ev := range r.Evals {
				if ev != nil {
					pts = append(pts, plotter.XY{X: ev.KLToInitial, Y: ev.GoldReward})
					ymin, ymax = math.Min(ymin, ev.GoldReward), math.Max(ymax, ev.GoldReward)
				}
			}
			reach = math.Min(reach, stats.MaxKL(r.Front))
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return nil, err
		}
		sc.Color, sc.Shape, sc.Radius = plotutil.Color(i), plotutil.Shape(i), vg.Points(2)
		p.Add(sc)
		s := pseries{name: st.Arm}
		const n = 40
		for j := 0; j <= n && reach > 0; j++ {
			xk := reach * float64(j) / n
			var ys []float64
			for _, r := range st.runs {
				if v, ok := stats.FrontierAt(r.Front, xk); ok {
					ys = append(ys, v)
				}
			}
			if len(ys) == len(st.runs) {
				s.x, s.y = append(s.x, xk), append(s.y, stats.MeanStd(ys).Mean)
			}
		}
		if len(s.x) > 0 {
			l, err := plotter.NewLine(s.xys())
			if err != nil {
				return nil, err
			}
			l.Color, l.Dashes, l.Width = plotutil.Color(i), plotutil.Dashes(i), vg.Points(1.5)
			p.Add(l)
			p.Legend.Add(st.Arm, l, sc)
		}
	}
	if !math.IsNaN(rep.CommonKL) && !math.IsInf(ymin, 0) {
		l, err := plotter.NewLine(plotter.XYs{{X: rep.CommonKL, Y: ymin}, {X: rep.CommonKL, Y: ymax}})
		if err != nil {
			return nil, err
		}
		l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("common KL %.3g", rep.CommonKL), l)
	}
	if len(mains) > 0 {
		legendRoom(p, len(mains)+1)
		if err := save(p, "frontier.png"); err != nil {
			return nil, err
		}
	}
	if gp, err := rep.plotGroupFrontiers(); err != nil {
		return nil, err
	} else if gp != nil {
		if err := save(gp, "frontier_groups.png"); err != nil {
			return nil, err
		}
	}

	// Per-phase gold reward and KL of the main arms, against the budget spent.
	for _, c := range []struct {
		file, title, yl string
		y               func(PhaseStats) stats.Stat
	}{
		{"phase_reward.png", "Gold reward after each phase (mean ± std over seeds)", "gold reward of samples", func(p PhaseStats) stats.Stat { return p.GoldReward }},
		{"phase_kl.png", "KL to the initial model after each phase (mean ± std over seeds)", "KL(policy ‖ initial), nats / sequence", func(p PhaseStats) stats.Stat { return p.KL }},
	} {
		p := newPlot(c.title, "labelled pairs used so far", c.yl)
		budget := 0.0
		for _, st := range mains {
			budget = math.Max(budget, float64(st.Pairs))
		}
		for i, st := range mains {
			s := pseries{name: st.Arm}
			for _, ps := range st.PerPhase {
				if ps.Evaluated {
					v := c.y(ps)
					s.x, s.y, s.e = append(s.x, float64(ps.PairsSoFar)), append(s.y, v.Mean), append(s.e, v.Std)
				}
			}
			s.x = jitter(s.x, i, len(mains), 0.008*budget)
			if err := addSeries(p, i, s); err != nil {
				return nil, err
			}
		}
		if len(mains) > 0 {
			legendRoom(p, len(mains))
			if err := save(p, c.file); err != nil {
				return nil, err
			}
		}
	}
	return files, nil
}
