package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/trainer/model"
)

// ExperimentReportOptions configure ReportExperiment.
type ExperimentReportOptions struct {
	Out string // DIR of `experiment run`
	// Doc is the markdown page to write (empty: none); PlotDir is where the PNGs go
	// (default: the doc's path without .md, e.g. docs/results/).
	Doc, PlotDir string
	// Seeds restricts the report to these seeds (default: every seed found in DIR/runs).
	Seeds []int64
	// Notes is a hand-written markdown file included as the page's Findings section
	// (empty: none): interpretation lives next to the generated tables, not in them.
	Notes string
	// Command is the exact command line that regenerates the page.
	Command string
	// Resamples of the paired bootstrap (default BootstrapResamples).
	Resamples int
}

// ExperimentReport is the aggregate of an experiment's runs (also written as DIR/report.json).
type ExperimentReport struct {
	Name      string     `json:"name"`
	Split     string     `json:"split"`
	Baseline  string     `json:"baseline"`
	Seeds     []int64    `json:"seeds"`
	Arms      []ArmStats `json:"arms"`
	Initial   ArmStats   `json:"initial"` // phase 0 (the initial model) of the baseline's runs
	CommonKL  float64    `json:"commonKL"`
	KLLimiter string     `json:"klLimitedBy"` // the run whose max KL sets CommonKL
	// MatchedKL are the KL levels the groups' pooled frontiers are read at.
	MatchedKL []float64            `json:"matchedKL"`
	Groups    []FrontierGroupStats `json:"groups"`
	// baselineGroup is the group of the baseline arm.
	baselineGroup string
	// WallSeconds is the sum of the runs' wall times.
	WallSeconds  float64            `json:"wallSeconds"`
	StageSeconds map[string]float64 `json:"stageSeconds"`
	Checks       []string           `json:"checks"`
	Markdown     string             `json:"-"`
	Files        []string           `json:"files"`
}

// ArmStats are one arm's numbers: means ± std over seeds unless noted.
type ArmStats struct {
	Arm         string  `json:"arm"`
	Description string  `json:"description,omitempty"`
	Main        bool    `json:"main"`
	Seeds       []int64 `json:"seeds"`
	Phases      int     `json:"phases"`
	Reference   string  `json:"reference"`
	Loss        string  `json:"loss"`
	Members     int     `json:"members"`
	Pairs       int     `json:"budgetPairs"`

	WinRate        Stat `json:"winRate"`
	HeldOutWinRate Stat `json:"heldOutWinRate"`
	GoldReward     Stat `json:"goldReward"`    // sampled decoding
	GreedyReward   Stat `json:"greedyReward"`  // greedy decoding, gold annotator
	HeldOutReward  Stat `json:"heldOutReward"` // sampled decoding, held-out evaluator
	RefTieRate     Stat `json:"referenceTieRate"`
	KL             Stat `json:"klToInitial"`
	MeanLength     Stat `json:"meanLength"`
	Distinct1      Stat `json:"distinct1"`
	Distinct2      Stat `json:"distinct2"`
	TieRate        Stat `json:"labelTieRate"` // label ties / labelled comparisons
	PairsKept      Stat `json:"pairsKept"`
	Identical      Stat `json:"identical"`
	WallSeconds    Stat `json:"wallSeconds"`

	// Paired differences against the baseline (nil for the baseline itself).
	DeltaWin     *BootstrapCI `json:"deltaWinRate,omitempty"`
	DeltaGreedy  *BootstrapCI `json:"deltaGreedyReward,omitempty"`
	DeltaHeldOut *BootstrapCI `json:"deltaHeldOutGreedy,omitempty"`
	// On the samples (nil when a run's evaluation predates per-prompt sample rewards).
	DeltaSampleGold    *BootstrapCI `json:"deltaGoldSamples,omitempty"`
	DeltaSampleHeldOut *BootstrapCI `json:"deltaHeldOutSamples,omitempty"`

	MaxKL      Stat `json:"maxKL"`
	RewardAtKL Stat `json:"rewardAtCommonKL"`

	PerPhase []PhaseStats `json:"perPhase"`

	runs []*expRun
}

// PhaseStats are one phase's numbers over seeds (phase 0 is the initial model).
type PhaseStats struct {
	Phase      int  `json:"phase"`
	PairsSoFar int  `json:"pairsSoFar"` // annotation budget spent after this phase
	Evaluated  bool `json:"evaluated"`
	GoldReward Stat `json:"goldReward"`
	KL         Stat `json:"klToInitial"`
	WinRate    Stat `json:"winRate"`
	PairsKept  Stat `json:"pairsKept"`
	Ties       Stat `json:"ties"`
	KLToRef    Stat `json:"klToReference"`
	Margin     Stat `json:"rewardMargin"`
}

// expRun is one finished run as read back from its workspace.
type expRun struct {
	Arm    string
	Seed   int64
	Name   string
	Root   string
	Spec   v1alpha1.AlignmentRunSpec
	Evals  []*EvalResult // by phase, nil when the phase was not evaluated
	Sums   []PhaseSummary
	Timing RunTiming
	Front  []KLPoint
}

func (r *expRun) final() *EvalResult { return r.Evals[len(r.Evals)-1] }

var runDirRE = regexp.MustCompile(`^(.+)-s([0-9]+)$`)

// ReportExperiment reads the runs of DIR/runs, aggregates them per arm, and writes the
// page, its plots and DIR/report.json.
func ReportExperiment(x *Experiment, opt ExperimentReportOptions) (*ExperimentReport, error) {
	volume := RunsDir(opt.Out)
	rec, err := ReadExperimentRecord(opt.Out)
	if err != nil {
		return nil, fmt.Errorf("%s: no experiment record (run `bpo experiment run` with this --out first): %w", opt.Out, err)
	}
	seeds := opt.Seeds
	if len(seeds) == 0 {
		if seeds, err = discoverSeeds(x, volume); err != nil {
			return nil, err
		}
	}
	rep := &ExperimentReport{Name: x.Name, Split: rec.Split, Baseline: x.Baseline, Seeds: seeds, StageSeconds: map[string]float64{}}
	// What the file gives today, to flag runs made from an older recipe.
	current := map[string]*v1alpha1.AlignmentRun{}
	if rs, err := x.Runs(x.ArmNames(), seeds[:1], rec.Split, false); err == nil {
		for _, r := range rs {
			current[r.Arm] = r.AR
		}
	}
	var missing []string
	for _, a := range x.Arms {
		st := ArmStats{Arm: a.Name, Description: a.Description}
		for _, s := range seeds {
			r, err := loadExpRun(volume, a.Name, s)
			if errors.Is(err, os.ErrNotExist) {
				missing = append(missing, RunName(a.Name, s))
				continue
			} else if err != nil {
				return nil, err
			}
			st.runs = append(st.runs, r)
			st.Seeds = append(st.Seeds, s)
		}
		if len(st.runs) == 0 {
			rep.Arms = append(rep.Arms, st)
			continue
		}
		spec := st.runs[0].Spec
		st.Phases, st.Reference, st.Loss = int(spec.TrustRegion.Phases), string(spec.TrustRegion.Reference), string(spec.Loss.Type)
		if spec.TrustRegion.EMAAlpha != nil {
			st.Reference += " α=" + string(*spec.TrustRegion.EMAAlpha)
		}
		st.Members, st.Pairs = int(spec.Ensemble.Members), int(spec.Budget.Pairs)
		if cur, ok := current[a.Name]; ok && !sameRecipe(cur.Spec, spec) {
			rep.Checks = append(rep.Checks, fmt.Sprintf("arm %s: its runs were made from a different recipe than %s gives now; rerun them (delete their folders) before trusting this page", a.Name, x.Path))
		}
		for _, r := range st.runs {
			if r.Evals[0] == nil {
				return nil, fmt.Errorf("run %s has no evaluation of the initial model (phase 0)", r.Name)
			}
			if r.final().Split != rec.Split {
				return nil, fmt.Errorf("run %s was evaluated on the %s split, the experiment on %s", r.Name, r.final().Split, rec.Split)
			}
			rep.WallSeconds += r.Timing.WallSeconds
			for k, v := range r.Timing.StageSeconds {
				rep.StageSeconds[k] += v
			}
		}
		fillArmStats(&st)
		rep.Arms = append(rep.Arms, st)
	}
	for i := range rep.Arms {
		rep.Arms[i].Main = slices.Contains(x.MainArms(), rep.Arms[i].Arm)
	}
	base := rep.arm(x.Baseline)
	if base == nil || len(base.runs) == 0 {
		return nil, fmt.Errorf("baseline arm %s has no finished runs in %s", x.Baseline, volume)
	}
	rep.Initial = initialStats(base)
	resamples := opt.Resamples
	if resamples <= 0 {
		resamples = BootstrapResamples
	}
	for i := range rep.Arms {
		st := &rep.Arms[i]
		if st.Arm == x.Baseline || len(st.runs) == 0 {
			continue
		}
		if err := pairedDiffs(st, base, resamples); err != nil {
			return nil, err
		}
	}
	rep.matchedKL()
	if err := rep.frontierGroups(x, resamples); err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		rep.Checks = append([]string{fmt.Sprintf("%d run(s) not finished and left out: %s", len(missing), strings.Join(missing, ", "))}, rep.Checks...)
	}
	rep.addChecks()

	if opt.Doc != "" {
		plotDir := opt.PlotDir
		if plotDir == "" {
			plotDir = strings.TrimSuffix(opt.Doc, filepath.Ext(opt.Doc))
		}
		files, err := rep.writeExperimentPlots(plotDir)
		if err != nil {
			return nil, err
		}
		rep.Files = files
		md, err := rep.markdown(x, opt, rec, volume, files)
		if err != nil {
			return nil, err
		}
		rep.Markdown = md
		if err := writeFileAtomic(opt.Doc, []byte(md)); err != nil {
			return nil, err
		}
	}
	// A standard deviation over one seed is NaN, which encoding/json refuses: write it as null.
	if err := writeJSONAtomic(filepath.Join(opt.Out, "report.json"), jsonSafe(reflect.ValueOf(rep))); err != nil {
		return nil, err
	}
	return rep, nil
}

// jsonSafe converts v into maps, slices and scalars that encoding/json can always encode,
// with NaN and infinite floats as null. Field names follow the json tags.
func jsonSafe(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return jsonSafe(v.Elem())
	case reflect.Float32, reflect.Float64:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil
		}
		return f
	case reflect.Struct:
		if _, ok := v.Interface().(json.Marshaler); ok {
			return v.Interface()
		}
		out := map[string]any{}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if strings.Contains(opts, "omitempty") && v.Field(i).IsZero() {
				continue
			}
			out[name] = jsonSafe(v.Field(i))
		}
		return out
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return nil
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = jsonSafe(v.Index(i))
		}
		return out
	case reflect.Map:
		if v.IsNil() {
			return nil
		}
		out := map[string]any{}
		for _, k := range v.MapKeys() {
			out[fmt.Sprint(k.Interface())] = jsonSafe(v.MapIndex(k))
		}
		return out
	default:
		return v.Interface()
	}
}

func (rep *ExperimentReport) arm(name string) *ArmStats {
	for i := range rep.Arms {
		if rep.Arms[i].Arm == name {
			return &rep.Arms[i]
		}
	}
	return nil
}

func sameRecipe(a, b v1alpha1.AlignmentRunSpec) bool {
	a.Workspace, b.Workspace = v1alpha1.WorkspaceSpec{}, v1alpha1.WorkspaceSpec{}
	a.Seed, b.Seed = 0, 0
	return reflect.DeepEqual(a, b)
}

// discoverSeeds finds the seeds of the arms' run folders.
func discoverSeeds(x *Experiment, volume string) ([]int64, error) {
	entries, err := os.ReadDir(volume)
	if err != nil {
		return nil, fmt.Errorf("no runs: %w", err)
	}
	var seeds []int64
	for _, e := range entries {
		m := runDirRE.FindStringSubmatch(e.Name())
		if !e.IsDir() || m == nil {
			continue
		}
		s, err := strconv.ParseInt(m[2], 10, 64)
		if err != nil {
			continue
		}
		for _, a := range x.Arms {
			if RunName(a.Name, s) == e.Name() && !slices.Contains(seeds, s) {
				seeds = append(seeds, s)
			}
		}
	}
	if len(seeds) == 0 {
		return nil, fmt.Errorf("no runs of %s in %s", x.Name, volume)
	}
	slices.Sort(seeds)
	return seeds, nil
}

// loadExpRun reads a finished run; os.ErrNotExist when it has not finished.
func loadExpRun(volume, arm string, seed int64) (*expRun, error) {
	name := RunName(arm, seed)
	root := filepath.Join(volume, name)
	data, err := os.ReadFile(filepath.Join(root, RunManifestFile))
	if err != nil {
		return nil, err
	}
	ar, err := DecodeRun(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(root, RunManifestFile), err)
	}
	ws := &Workspace{Root: root}
	F := int(ar.Spec.TrustRegion.Phases)
	r := &expRun{Arm: arm, Seed: seed, Name: name, Root: root, Spec: ar.Spec, Evals: make([]*EvalResult, F+1)}
	for k := 0; k <= F; k++ {
		var ev EvalResult
		err := readJSON(filepath.Join(ws.EvalDir(k), "result.json"), &ev)
		switch {
		case err == nil:
			r.Evals[k] = &ev
			// KL >= 0; a negative estimate is sampling noise around a policy at the initial model.
			r.Front = append(r.Front, KLPoint{KL: math.Max(ev.KLToInitial, 0), Reward: ev.GoldReward, perPrompt: sampleGoldPerPrompt(&ev)})
		case errors.Is(err, os.ErrNotExist):
			if k == F {
				return nil, err // not finished
			}
		default:
			return nil, err
		}
	}
	r.Front = Frontier(r.Front)
	if err := readJSON(filepath.Join(root, RunSummaryFile), &r.Sums); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("run %s: %s is missing (run `bpo experiment run` again to finish it)", name, RunSummaryFile)
		}
		return nil, err
	}
	if err := readJSON(filepath.Join(root, RunTimingFile), &r.Timing); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return r, nil
}

func statOf(runs []*expRun, f func(*expRun) float64) Stat {
	xs := make([]float64, 0, len(runs))
	for _, r := range runs {
		if v := f(r); !math.IsNaN(v) {
			xs = append(xs, v)
		}
	}
	return MeanStd(xs)
}

func fillArmStats(st *ArmStats) {
	rs := st.runs
	fin := func(f func(*EvalResult) float64) Stat {
		return statOf(rs, func(r *expRun) float64 { return f(r.final()) })
	}
	st.WinRate = fin(func(e *EvalResult) float64 { return e.WinRate })
	st.HeldOutWinRate = fin(func(e *EvalResult) float64 { return e.HeldOutWinRate })
	st.GoldReward = fin(func(e *EvalResult) float64 { return e.GoldReward })
	st.GreedyReward = fin(func(e *EvalResult) float64 { return e.GreedyReward })
	st.HeldOutReward = fin(func(e *EvalResult) float64 { return e.HeldOutReward })
	st.RefTieRate = fin(func(e *EvalResult) float64 { return e.TieRate })
	st.KL = fin(func(e *EvalResult) float64 { return e.KLToInitial })
	st.MeanLength = fin(func(e *EvalResult) float64 { return e.MeanLength })
	st.Distinct1 = fin(func(e *EvalResult) float64 { return e.Distinct1 })
	st.Distinct2 = fin(func(e *EvalResult) float64 { return e.Distinct2 })
	st.TieRate = statOf(rs, func(r *expRun) float64 {
		var ties, kept int64
		for _, s := range r.Sums {
			ties += s.Ties
			kept += s.Pairs
		}
		if ties+kept == 0 {
			return math.NaN()
		}
		return float64(ties) / float64(ties+kept)
	})
	st.PairsKept = statOf(rs, func(r *expRun) float64 {
		var kept int64
		for _, s := range r.Sums {
			kept += s.Pairs
		}
		return float64(kept)
	})
	st.Identical = statOf(rs, func(r *expRun) float64 {
		var n int64
		for _, s := range r.Sums {
			n += s.Identical
		}
		return float64(n)
	})
	st.WallSeconds = statOf(rs, func(r *expRun) float64 { return r.Timing.WallSeconds })
	st.MaxKL = statOf(rs, func(r *expRun) float64 { return MaxKL(r.Front) })
	perPhase := st.Pairs / max(st.Phases, 1)
	for k := 0; k <= st.Phases; k++ {
		ps := PhaseStats{Phase: k, PairsSoFar: k * perPhase}
		var ev []*expRun
		for _, r := range rs {
			if k < len(r.Evals) && r.Evals[k] != nil {
				ev = append(ev, r)
			}
		}
		if len(ev) > 0 {
			ps.Evaluated = true
			ps.GoldReward = statOf(ev, func(r *expRun) float64 { return r.Evals[k].GoldReward })
			ps.KL = statOf(ev, func(r *expRun) float64 { return r.Evals[k].KLToInitial })
			ps.WinRate = statOf(ev, func(r *expRun) float64 { return r.Evals[k].WinRate })
		}
		if k > 0 {
			sum := func(f func(PhaseSummary) float64) Stat {
				return statOf(rs, func(r *expRun) float64 {
					if k-1 < len(r.Sums) {
						return f(r.Sums[k-1])
					}
					return math.NaN()
				})
			}
			ps.PairsKept = sum(func(s PhaseSummary) float64 { return float64(s.Pairs) })
			ps.Ties = sum(func(s PhaseSummary) float64 { return float64(s.Ties) })
			ps.KLToRef = sum(func(s PhaseSummary) float64 { return s.KLToRef })
			ps.Margin = sum(func(s PhaseSummary) float64 { return s.Margin })
		}
		st.PerPhase = append(st.PerPhase, ps)
	}
}

// initialStats summarises phase 0 (the initial model) of the baseline's runs.
func initialStats(base *ArmStats) ArmStats {
	st := ArmStats{Arm: "initial model", Seeds: base.Seeds}
	rs := base.runs
	ini := func(f func(*EvalResult) float64) Stat {
		return statOf(rs, func(r *expRun) float64 { return f(r.Evals[0]) })
	}
	st.WinRate = ini(func(e *EvalResult) float64 { return e.WinRate })
	st.HeldOutWinRate = ini(func(e *EvalResult) float64 { return e.HeldOutWinRate })
	st.GoldReward = ini(func(e *EvalResult) float64 { return e.GoldReward })
	st.GreedyReward = ini(func(e *EvalResult) float64 { return e.GreedyReward })
	st.HeldOutReward = ini(func(e *EvalResult) float64 { return e.HeldOutReward })
	st.RefTieRate = ini(func(e *EvalResult) float64 { return e.TieRate })
	st.KL = ini(func(e *EvalResult) float64 { return e.KLToInitial })
	st.MeanLength = ini(func(e *EvalResult) float64 { return e.MeanLength })
	st.Distinct1 = ini(func(e *EvalResult) float64 { return e.Distinct1 })
	st.Distinct2 = ini(func(e *EvalResult) float64 { return e.Distinct2 })
	return st
}

// pairedDiffs bootstraps the arm's final outcomes against the baseline's on the seeds both
// have: the same prompts (the first evalPrompts of the split) under the same seed.
func pairedDiffs(st, base *ArmStats, resamples int) error {
	var win, winB, gold, goldB, held, heldB, sg, sgB, sh, shB [][]float64
	samples := true // every paired run has per-prompt sample rewards
	for _, r := range st.runs {
		i := slices.Index(base.Seeds, r.Seed)
		if i < 0 {
			continue
		}
		a, b := r.final().PerPrompt, base.runs[i].final().PerPrompt
		if len(a) != len(b) || len(a) == 0 {
			return fmt.Errorf("arm %s seed %d: %d evaluated prompts, baseline %s has %d: the paired bootstrap needs the same prompts (same spec.budget.evalPrompts)",
				st.Arm, r.Seed, len(a), base.Arm, len(b))
		}
		w, wb := make([]float64, len(a)), make([]float64, len(a))
		g, gb := make([]float64, len(a)), make([]float64, len(a))
		h, hb := make([]float64, len(a)), make([]float64, len(a))
		x, xb := make([]float64, len(a)), make([]float64, len(a))
		y, yb := make([]float64, len(a)), make([]float64, len(a))
		for j := range a {
			// A win is a strictly higher score than the reference, as in EvalResult.WinRate.
			w[j], wb[j] = indicator(a[j].Win == 1), indicator(b[j].Win == 1)
			g[j], gb[j] = a[j].GoldReward, b[j].GoldReward
			h[j], hb[j] = a[j].HeldOut, b[j].HeldOut
			if a[j].SampleGold == nil || b[j].SampleGold == nil || a[j].SampleHeldOut == nil || b[j].SampleHeldOut == nil {
				samples = false
				continue
			}
			x[j], xb[j] = *a[j].SampleGold, *b[j].SampleGold
			y[j], yb[j] = *a[j].SampleHeldOut, *b[j].SampleHeldOut
		}
		sg, sgB = append(sg, x), append(sgB, xb)
		sh, shB = append(sh, y), append(shB, yb)
		win, winB = append(win, w), append(winB, wb)
		gold, goldB = append(gold, g), append(goldB, gb)
		held, heldB = append(held, h), append(heldB, hb)
	}
	if len(win) == 0 {
		return nil
	}
	type pair struct {
		a, b [][]float64
		dst  **BootstrapCI
	}
	cs := []pair{{win, winB, &st.DeltaWin}, {gold, goldB, &st.DeltaGreedy}, {held, heldB, &st.DeltaHeldOut}}
	if samples {
		cs = append(cs, pair{sg, sgB, &st.DeltaSampleGold}, pair{sh, shB, &st.DeltaSampleHeldOut})
	}
	for _, c := range cs {
		ci, err := PairedBootstrap(c.a, c.b, resamples, 0.95, BootstrapSeed)
		if err != nil {
			return fmt.Errorf("arm %s: %w", st.Arm, err)
		}
		*c.dst = &ci
	}
	return nil
}

// sampleGoldPerPrompt is the evaluation's per-prompt mean gold reward of samples, nil when
// it was not recorded (evaluations made before it was).
func sampleGoldPerPrompt(ev *EvalResult) []float64 {
	if len(ev.PerPrompt) == 0 {
		return nil
	}
	out := make([]float64, len(ev.PerPrompt))
	for i, o := range ev.PerPrompt {
		if o.SampleGold == nil {
			return nil
		}
		out[i] = *o.SampleGold
	}
	return out
}

func indicator(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// matchedKL picks the common KL (the smallest max KL of all runs, so that no frontier is
// extrapolated) and reads every run's frontier there.
func (rep *ExperimentReport) matchedKL() {
	rep.CommonKL = math.Inf(1)
	for _, st := range rep.Arms {
		for _, r := range st.runs {
			if m := MaxKL(r.Front); m < rep.CommonKL {
				rep.CommonKL, rep.KLLimiter = m, r.Name
			}
		}
	}
	if math.IsInf(rep.CommonKL, 1) {
		rep.CommonKL = math.NaN()
	}
	for i := range rep.Arms {
		st := &rep.Arms[i]
		st.RewardAtKL = statOf(st.runs, func(r *expRun) float64 {
			v, _ := FrontierAt(r.Front, rep.CommonKL)
			return v
		})
	}
}

// addChecks lists the effects a reader must know about before reading the tables.
func (rep *ExperimentReport) addChecks() {
	add := func(format string, args ...any) { rep.Checks = append(rep.Checks, fmt.Sprintf(format, args...)) }
	if rep.Split == SplitValidation {
		add("these are **validation-split** numbers, for choosing hyperparameters; final numbers come from the eval split")
	}
	var done []ArmStats
	for _, st := range rep.Arms {
		if len(st.runs) > 0 {
			done = append(done, st)
		}
	}
	budgets := map[int][]string{}
	for _, st := range done {
		budgets[st.Pairs] = append(budgets[st.Pairs], st.Arm)
	}
	if len(budgets) > 1 {
		var parts []string
		for p, arms := range budgets {
			parts = append(parts, fmt.Sprintf("%d pairs: %s", p, strings.Join(arms, ", ")))
		}
		sort.Strings(parts)
		add("the arms do not share one annotation budget (%s)", strings.Join(parts, "; "))
	}
	var sat []string
	for _, st := range done {
		if st.WinRate.Mean >= 0.95 || st.WinRate.Mean <= 0.05 {
			sat = append(sat, fmt.Sprintf("%s (%.3f)", st.Arm, st.WinRate.Mean))
		}
	}
	if len(sat) > 0 {
		add("win rate saturated (>= 0.95 or <= 0.05), it cannot rank: %s; compare gold reward at matched KL instead", strings.Join(sat, ", "))
	}
	// Effective data: the pilot's offline arm kept far fewer pairs because the initial model's samples tie.
	lo, hi := math.Inf(1), math.Inf(-1)
	var loArm, hiArm string
	for _, st := range done {
		if v := st.PairsKept.Mean; v < lo {
			lo, loArm = v, st.Arm
		}
		if v := st.PairsKept.Mean; v > hi {
			hi, hiArm = v, st.Arm
		}
	}
	if hi > 0 && lo < 0.8*hi {
		add("the arms trained on different amounts of data after ties and identical samples were dropped: %s kept %.0f pairs, %s %.0f (same annotation budget)", loArm, lo, hiArm, hi)
	}
	ini := rep.Initial
	for _, st := range done {
		if ini.Distinct2.Mean > 0 && st.Distinct2.Mean < 0.5*ini.Distinct2.Mean {
			add("%s: distinct-2 fell from %.3f (initial model) to %.3f: repetitive outputs, possible reward hacking", st.Arm, ini.Distinct2.Mean, st.Distinct2.Mean)
		}
		if ini.MeanLength.Mean > 0 && math.Abs(st.MeanLength.Mean-ini.MeanLength.Mean) > 0.5*ini.MeanLength.Mean {
			add("%s: mean length moved from %.1f to %.1f tokens", st.Arm, ini.MeanLength.Mean, st.MeanLength.Mean)
		}
		if d, h := st.DeltaGreedy, st.DeltaHeldOut; d != nil && h != nil && d.Lo > 0 && h.Hi < 0 {
			add("%s: beats %s on the gold annotator (%s) but loses on the held-out evaluator (%s): the gain does not transfer", st.Arm, rep.Baseline, d.Format("%.3f"), h.Format("%.3f"))
		}
	}
	if !math.IsNaN(rep.CommonKL) {
		var maxes []float64
		for _, st := range done {
			maxes = append(maxes, st.MaxKL.Mean)
		}
		slices.Sort(maxes)
		switch med := maxes[len(maxes)/2]; {
		case rep.CommonKL <= 0:
			add("run %s never measured a KL above 0 (its policies stayed at the initial model, within the estimate's noise), so the matched-KL comparison is at KL 0: read the frontier plot", rep.KLLimiter)
		case rep.CommonKL < 0.25*med:
			add("the matched-KL comparison sits at KL %.3g, set by %s, far below the median arm's reach (%.3g): read the frontier plot too", rep.CommonKL, rep.KLLimiter, med)
		}
	}
}

// modelInfo describes the base models of the arms from their config.json.
func modelInfo(volume string, arms []ArmStats) []string {
	seen := map[string]bool{}
	var out []string
	for _, st := range arms {
		if len(st.runs) == 0 {
			continue
		}
		r := st.runs[0]
		m := r.Spec.Model
		label, dir := "", ""
		if m.Path != "" {
			label, dir = "path "+m.Path, filepath.Join(volume, m.Path)
		} else {
			label, dir = "built-in "+m.Builtin, filepath.Join(r.Root, "base")
		}
		if seen[label] {
			continue
		}
		seen[label] = true
		cfg, err := model.ReadConfig(filepath.Join(dir, "config.json"))
		if err != nil {
			out = append(out, fmt.Sprintf("%s (config.json unreadable: %v)", label, err))
			continue
		}
		total := 0
		for _, shape := range cfg.ParamShapes() {
			n := 1
			for _, d := range shape {
				n *= d
			}
			total += n
		}
		rank, lora := int(r.Spec.Ensemble.Rank), 0
		for _, t := range model.LoRATargets {
			if in, o, ok := cfg.TargetShape(t); ok {
				lora += rank * (in + o)
			}
		}
		lora *= cfg.NLayer
		out = append(out, fmt.Sprintf("%s: GPT-2 architecture, %d layers, width %d, %d heads, context %d, vocabulary %d: **%s parameters**; LoRA rank %d adds %s per ensemble member",
			label, cfg.NLayer, cfg.NEmbd, cfg.NHead, cfg.NPositions, cfg.VocabSize, groupDigits(total), rank, groupDigits(lora)))
	}
	return out
}

func groupDigits(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
