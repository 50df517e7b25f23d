package experiment

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/bpo-dev/bpo/experiment/stats"
)

// An arm is one operating point (a learning rate, a beta) of a schedule; `group:` in the
// experiment file names the schedule. A group's frontier pools, seed by seed, the
// evaluations of all its arms, so a schedule is judged by the best reward it reaches at each
// KL over every operating point tried, not by where one learning rate happened to stop.

// FrontierGroupStats is one group's pooled reward-KL frontier read at the report's KL levels.
type FrontierGroupStats struct {
	Group string   `json:"group"`
	Arms  []string `json:"arms"`
	// Seeds are those where every arm of the group has a finished run.
	Seeds []int64    `json:"seeds"`
	MaxKL stats.Stat `json:"maxKL"`
	// AtKL[i] is the pooled frontier's gold reward at MatchedKL[i] (no value when a seed's
	// frontier does not reach that KL: no extrapolation).
	AtKL []stats.Stat `json:"rewardAtKL"`
	// DeltaAtKL[i] is this group minus the baseline's group at MatchedKL[i], paired by seed;
	// Better[i] counts the seeds where it is positive. Empty for the baseline's group.
	DeltaAtKL []stats.Stat `json:"deltaAtKL,omitempty"`
	Better    []int        `json:"seedsBetter,omitempty"`
	// DeltaCI[i] is the hierarchical bootstrap (seeds, then prompts) of DeltaAtKL[i], with
	// the frontiers' interpolation weights held fixed; nil when an evaluation involved has no
	// per-prompt sample rewards.
	DeltaCI []*stats.BootstrapCI `json:"deltaAtKLCI,omitempty"`
	// Against is what the deltas compare with: the baseline's group when this group pools as
	// many operating points, else the baseline arm alone (more points can only raise a
	// frontier, so a pooled baseline would be an unfair yardstick for a single arm).
	Against string `json:"against,omitempty"`

	fronts map[int64][]stats.KLPoint
	// trained are, per seed, the KLs of the evaluations after training (stats.Supported), band
	// the report's KL band.
	trained map[int64][]float64
	band    float64
}

// GroupOf is the frontier group of an arm: its `group:`, else its own name.
func (x *Experiment) GroupOf(arm string) string {
	for _, a := range x.Arms {
		if a.Name == arm && a.Group != "" {
			return a.Group
		}
	}
	return arm
}

// frontierGroups pools the arms' runs into groups and reads them at the KL levels: the
// file's matchedKL, else the common KL of the per-arm table.
func (rep *Report) frontierGroups(x *Experiment, resamples int) error {
	rep.MatchedKL = slices.Clone(x.MatchedKL)
	if len(rep.MatchedKL) == 0 && !math.IsNaN(rep.CommonKL) {
		rep.MatchedKL = []float64{rep.CommonKL}
	}
	var order []string
	byGroup := map[string][]*ArmStats{}
	for i := range rep.Arms {
		st := &rep.Arms[i]
		if len(st.runs) == 0 {
			continue
		}
		g := x.GroupOf(st.Arm)
		if _, ok := byGroup[g]; !ok {
			order = append(order, g)
		}
		byGroup[g] = append(byGroup[g], st)
	}
	rep.Groups = nil
	for _, g := range order {
		gs := FrontierGroupStats{Group: g, fronts: map[int64][]stats.KLPoint{}, trained: map[int64][]float64{}, band: rep.KLBand}
		arms := byGroup[g]
		for _, st := range arms {
			gs.Arms = append(gs.Arms, st.Arm)
			if a := arms[0]; st.Phases != a.Phases || st.Reference != a.Reference || st.Loss != a.Loss || st.Members != a.Members || st.Pairs != a.Pairs {
				rep.Checks = append(rep.Checks, fmt.Sprintf("group %s pools %s and %s, which differ in schedule, loss, ensemble or budget: a group should only vary the operating point (learning rate, beta)", g, a.Arm, st.Arm))
			}
		}
		for _, seed := range rep.Seeds {
			var pts []stats.KLPoint
			var trained []float64
			all := true
			for _, st := range arms {
				i := slices.IndexFunc(st.runs, func(r *expRun) bool { return r.Seed == seed })
				if i < 0 {
					all = false
					break
				}
				pts = append(pts, st.runs[i].Front...)
				trained = append(trained, st.runs[i].Trained...)
			}
			if all && len(pts) > 0 {
				gs.Seeds = append(gs.Seeds, seed)
				gs.fronts[seed] = stats.Frontier(pts)
				gs.trained[seed] = trained
			}
		}
		var maxes []float64
		for _, s := range gs.Seeds {
			maxes = append(maxes, stats.MaxKL(gs.fronts[s]))
		}
		gs.MaxKL = stats.MeanStd(maxes)
		for _, kl := range rep.MatchedKL {
			gs.AtKL = append(gs.AtKL, gs.at(kl))
		}
		rep.Groups = append(rep.Groups, gs)
	}
	rep.baselineGroup = x.GroupOf(rep.Baseline)
	baseGroup := rep.group(rep.baselineGroup)
	baseArm := rep.arm(rep.Baseline)
	if baseGroup == nil || baseArm == nil {
		return nil
	}
	single := &FrontierGroupStats{Group: rep.Baseline, fronts: map[int64][]stats.KLPoint{}, trained: map[int64][]float64{}, band: rep.KLBand}
	for _, r := range baseArm.runs {
		single.Seeds = append(single.Seeds, r.Seed)
		single.fronts[r.Seed] = r.Front
		single.trained[r.Seed] = r.Trained
	}
	for i := range rep.Groups {
		gs := &rep.Groups[i]
		if gs.Group == baseGroup.Group {
			continue
		}
		base := baseGroup
		gs.Against = "group " + baseGroup.Group
		if len(gs.Arms) != len(baseGroup.Arms) {
			base, gs.Against = single, "arm "+rep.Baseline
		}
		for _, kl := range rep.MatchedKL {
			d, better, ci, err := gs.deltaAt(base, kl, resamples)
			if err != nil {
				return err
			}
			gs.DeltaAtKL = append(gs.DeltaAtKL, d)
			gs.Better = append(gs.Better, better)
			gs.DeltaCI = append(gs.DeltaCI, ci)
		}
	}
	return nil
}

// deltaAt compares the group with base at KL kl, seed by seed: the mean ± std of the
// differences (no value, "no overlap", unless both frontiers of every seed have trained points
// around kl: stats.Supported), the seeds where the group
// is higher, and the hierarchical bootstrap (seeds, then prompts) when every evaluation involved recorded
// per-prompt rewards.
func (gs *FrontierGroupStats) deltaAt(base *FrontierGroupStats, kl float64, resamples int) (stats.Stat, int, *stats.BootstrapCI, error) {
	var ds []float64
	var pa, pb [][]float64
	better, perPrompt := 0, true
	for _, s := range gs.Seeds {
		if !slices.Contains(base.Seeds, s) {
			continue
		}
		va, okA := stats.FrontierPerPrompt(gs.fronts[s], kl)
		vb, okB := stats.FrontierPerPrompt(base.fronts[s], kl)
		a, inA := gs.readAt(s, kl)
		b, inB := base.readAt(s, kl)
		if !inA || !inB {
			return stats.MeanStd(nil), 0, nil, nil // no trained points of one side around this KL: no number
		}
		ds = append(ds, a-b)
		if a > b {
			better++
		}
		perPrompt = perPrompt && okA && okB
		pa, pb = append(pa, va), append(pb, vb)
	}
	if !perPrompt || len(ds) == 0 {
		return stats.MeanStd(ds), better, nil, nil
	}
	c, err := stats.HierarchicalBootstrap(pa, pb, resamples, 0.95, stats.BootstrapSeed)
	if err != nil {
		return stats.Stat{}, 0, nil, fmt.Errorf("group %s at KL %g: %w", gs.Group, kl, err)
	}
	return stats.MeanStd(ds), better, &c, nil
}

// at is the group's frontier reward at KL kl over its seeds; no value unless every seed's
// frontier has trained points around kl (readAt).
func (gs *FrontierGroupStats) at(kl float64) stats.Stat {
	return gs.mean(kl, gs.readAt)
}

// curveAt is the mean frontier over seeds at kl wherever every seed's frontier is defined, for
// plotting the curves (the plot shows the trained points themselves next to them).
func (gs *FrontierGroupStats) curveAt(kl float64) stats.Stat {
	return gs.mean(kl, func(s int64, kl float64) (float64, bool) { return stats.FrontierAt(gs.fronts[s], kl) })
}

func (gs *FrontierGroupStats) mean(kl float64, read func(int64, float64) (float64, bool)) stats.Stat {
	var xs []float64
	for _, s := range gs.Seeds {
		v, ok := read(s, kl)
		if !ok {
			return stats.MeanStd(nil)
		}
		xs = append(xs, v)
	}
	return stats.MeanStd(xs)
}

// readAt reads seed s's frontier at kl where its trained points support it (stats.Supported).
func (gs *FrontierGroupStats) readAt(s int64, kl float64) (float64, bool) {
	if !stats.Supported(gs.trained[s], kl, gs.band) {
		return math.NaN(), false
	}
	return stats.FrontierAt(gs.fronts[s], kl)
}

func (rep *Report) group(name string) *FrontierGroupStats {
	for i := range rep.Groups {
		if rep.Groups[i].Group == name {
			return &rep.Groups[i]
		}
	}
	return nil
}

// pooled reports whether some group has more than one arm (else the per-arm matched-KL
// table says it all, unless the file asked for KL levels).
func (rep *Report) pooled() bool {
	for _, g := range rep.Groups {
		if len(g.Arms) > 1 {
			return true
		}
	}
	return false
}

func fmtKLLevels(kls []float64) string {
	s := ""
	for i, k := range kls {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%.3g", k)
	}
	return s
}

// plotGroupFrontiers draws the pooled frontiers of the groups with several arms (mean over
// seeds, up to the shortest seed's reach) with the KL levels they are read at; nil when no
// group pools anything.
func (rep *Report) plotGroupFrontiers() (*plot.Plot, error) {
	if !rep.pooled() {
		return nil, nil
	}
	p := newPlot("Frontiers pooled over each schedule's operating points (mean over seeds)", "KL(policy ‖ initial), nats / sequence", "gold reward of samples")
	ymin, ymax := math.Inf(1), math.Inf(-1)
	n := 0
	for _, gs := range rep.Groups {
		if len(gs.Arms) < 2 || len(gs.Seeds) == 0 {
			continue
		}
		reach := math.Inf(1)
		for _, s := range gs.Seeds {
			reach = math.Min(reach, stats.MaxKL(gs.fronts[s]))
		}
		ser := pseries{name: gs.Group}
		const steps = 60
		for j := 0; j <= steps && reach > 0; j++ {
			xk := reach * float64(j) / steps
			if v := gs.curveAt(xk); !math.IsNaN(v.Mean) {
				ser.x, ser.y = append(ser.x, xk), append(ser.y, v.Mean)
				ymin, ymax = math.Min(ymin, v.Mean), math.Max(ymax, v.Mean)
			}
		}
		if len(ser.x) == 0 {
			continue
		}
		l, err := plotter.NewLine(ser.xys())
		if err != nil {
			return nil, err
		}
		l.Color, l.Dashes, l.Width = plotutil.Color(n), plotutil.Dashes(n), vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (%d arms)", gs.Group, len(gs.Arms)), l)
		n++
	}
	if n == 0 {
		return nil, nil
	}
	for _, kl := range rep.MatchedKL {
		l, err := plotter.NewLine(plotter.XYs{{X: kl, Y: ymin}, {X: kl, Y: ymax}})
		if err != nil {
			return nil, err
		}
		l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		p.Add(l)
	}
	legendRoom(p, n)
	return p, nil
}

// groupTable writes the pooled frontiers read at the KL levels, with the paired difference
// to the baseline's group.
func (rep *Report) groupTable(w func(string, ...any)) {
	w("\n### Pooled over operating points\n\n")
	w("Arms that share a `group:` in the experiment file are operating points (learning rate, beta) of one schedule. "+
		"For each seed, a group's frontier is the frontier of all its arms' evaluations together: the best reward the schedule reaches within a KL budget "+
		"over everything tried. Read at KL %s nats/sequence, and only where every seed's frontier has a trained evaluation within ±%.3g of that KL and inside the range of its trained evaluations "+
		"(else *no overlap*: no extrapolation, no reading across a gap between runs). "+
		"Δ is the group minus **%s** (pooled the same way) when it pools as many operating points, else minus the baseline arm alone (see *against*; "+
		"more points can only raise a frontier), paired by seed: mean ± std over seeds, in parentheses the seeds where the group is higher, "+
		"then a 95%% hierarchical paired bootstrap interval (seeds, then prompts within each drawn seed; the frontiers' interpolation weights held fixed; **bold** when it excludes 0) "+
		"where every evaluation involved recorded per-prompt sample rewards.\n\n", fmtKLLevels(rep.MatchedKL), rep.KLBand, rep.baselineGroup)
	w("| group | arms | seeds | max KL | against |")
	sep := "|---|---|---|---|---|"
	for _, kl := range rep.MatchedKL {
		w(" reward at KL %.3g | Δ at KL %.3g |", kl, kl)
		sep += "---|---|"
	}
	w("\n%s\n", sep)
	for _, g := range rep.Groups {
		w("| %s | %s | %d | %s | %s |", g.Group, strings.Join(g.Arms, ", "), len(g.Seeds), g.MaxKL.Format("%.3g"), g.Against)
		for i := range rep.MatchedKL {
			d := ""
			if i < len(g.DeltaAtKL) {
				d = fmtOverlap(g.DeltaAtKL[i], fmtDelta(g.DeltaAtKL[i]))
				if g.DeltaAtKL[i].N > 0 {
					d += fmt.Sprintf(" (%d/%d)", g.Better[i], g.DeltaAtKL[i].N)
				}
				if c := g.DeltaCI[i]; c != nil {
					d += " " + fmtCI(c)
				}
			}
			w(" %s | %s |", fmtOverlap(g.AtKL[i], g.AtKL[i].Format("%.3f")), d)
		}
		w("\n")
	}
	w("\n")
}

// fmtDelta prints a signed mean ± std ("+0.012 ± 0.004").
func fmtDelta(s stats.Stat) string {
	switch {
	case s.N == 0 || math.IsNaN(s.Mean):
		return "–"
	case s.N == 1:
		return fmt.Sprintf("%+.3f", s.Mean)
	}
	return fmt.Sprintf("%+.3f ± %.3f", s.Mean, s.Std)
}
