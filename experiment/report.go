package experiment

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/experiment/stats"
)

// ReportOptions configure BuildReport.
type ReportOptions struct {
	Out string // DIR of `experiment run` (or Records)
	// Records is a records file to report from instead of DIR (see records.go); RecordsOut is
	// where a report from DIR writes its records (default DIR/records.json).
	Records, RecordsOut string
	// Doc is the markdown page to write (empty: none); PlotDir is where the PNGs go
	// (default: the doc's path without .md, e.g. docs/results/).
	Doc, PlotDir string
	// Seeds restricts the report to these seeds (default: every seed found in DIR/runs).
	Seeds []int64
	// Notes is a hand-written markdown file included as the page's Findings section
	// (empty: none): interpretation lives next to the generated tables, not in them.
	Notes string
	// Command is the exact command line that regenerates the page (default: ReportCommand).
	Command string
	// Resamples of the paired bootstrap (default stats.BootstrapResamples).
	Resamples int
}

// Report is the aggregate of an experiment's runs (also written as DIR/report.json).
type Report struct {
	Name      string     `json:"name"`
	Split     string     `json:"split"`
	Baseline  string     `json:"baseline"`
	Seeds     []int64    `json:"seeds"`
	Arms      []ArmStats `json:"arms"`
	Initial   ArmStats   `json:"initial"` // phase 0 (the initial model) of the baseline's runs
	CommonKL  float64    `json:"commonKL"`
	KLLimiter string     `json:"klLimitedBy"` // the run whose max KL sets CommonKL
	// KLBand is the band of stats.Supported: a frontier is read at a KL only within it of a
	// trained point.
	KLBand float64 `json:"klBand"`
	// MatchedKL are the KL levels the groups' pooled frontiers are read at.
	MatchedKL []float64            `json:"matchedKL"`
	Groups    []FrontierGroupStats `json:"groups"`
	// Comparisons are the file's named contrasts (Arm minus Against), in the file's order.
	Comparisons []ComparisonStats `json:"comparisons,omitempty"`
	// baselineGroup is the group of the baseline arm.
	baselineGroup string
	// WallSeconds is the sum of the runs' wall times.
	WallSeconds  float64            `json:"wallSeconds"`
	StageSeconds map[string]float64 `json:"stageSeconds"`
	Checks       []string           `json:"checks"`
	Markdown     string             `json:"-"`
	// Records is the records file the report was computed from (the experiment folder written
	// as $OUT); RecordsBytes its size when this report wrote it.
	Records      string   `json:"records"`
	RecordsBytes int      `json:"recordsBytes,omitempty"`
	Files        []string `json:"files"`
}

// Deltas are one arm's paired differences against another (hierarchical bootstrap intervals).
type Deltas struct {
	DeltaWin     *stats.BootstrapCI `json:"deltaWinRate,omitempty"`
	DeltaGreedy  *stats.BootstrapCI `json:"deltaGreedyReward,omitempty"`
	DeltaHeldOut *stats.BootstrapCI `json:"deltaHeldOutGreedy,omitempty"`
	// On the samples (nil when a run's evaluation predates per-prompt sample rewards).
	DeltaSampleGold    *stats.BootstrapCI `json:"deltaGoldSamples,omitempty"`
	DeltaSampleHeldOut *stats.BootstrapCI `json:"deltaHeldOutSamples,omitempty"`
}

// ComparisonStats is one of the file's named comparisons: Arm minus Against over the seeds
// both ran (Deltas nil when they share none).
type ComparisonStats struct {
	Comparison
	Deltas
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

	WinRate        stats.Stat `json:"winRate"`
	HeldOutWinRate stats.Stat `json:"heldOutWinRate"`
	GoldReward     stats.Stat `json:"goldReward"`    // sampled decoding
	GreedyReward   stats.Stat `json:"greedyReward"`  // greedy decoding, gold annotator
	HeldOutReward  stats.Stat `json:"heldOutReward"` // sampled decoding, held-out evaluator
	RefTieRate     stats.Stat `json:"referenceTieRate"`
	KL             stats.Stat `json:"klToInitial"`
	MeanLength     stats.Stat `json:"meanLength"`
	Distinct1      stats.Stat `json:"distinct1"`
	Distinct2      stats.Stat `json:"distinct2"`
	TieRate        stats.Stat `json:"labelTieRate"` // label ties / labelled comparisons
	PairsKept      stats.Stat `json:"pairsKept"`
	Identical      stats.Stat `json:"identical"`
	WallSeconds    stats.Stat `json:"wallSeconds"`
	// OptimizerSteps are the optimizer steps per member over the whole run.
	OptimizerSteps stats.Stat `json:"optimizerSteps"`

	// Paired differences against the baseline (nil for the baseline itself).
	Deltas

	MaxKL      stats.Stat `json:"maxKL"`
	RewardAtKL stats.Stat `json:"rewardAtCommonKL"`

	PerPhase []PhaseStats `json:"perPhase"`

	runs []*expRun
}

// PhaseStats are one phase's numbers over seeds (phase 0 is the initial model).
type PhaseStats struct {
	Phase      int        `json:"phase"`
	PairsSoFar int        `json:"pairsSoFar"` // annotation budget spent after this phase
	Evaluated  bool       `json:"evaluated"`
	GoldReward stats.Stat `json:"goldReward"`
	KL         stats.Stat `json:"klToInitial"`
	WinRate    stats.Stat `json:"winRate"`
	PairsKept  stats.Stat `json:"pairsKept"`
	Ties       stats.Stat `json:"ties"`
	KLToRef    stats.Stat `json:"klToReference"`
	Margin     stats.Stat `json:"rewardMargin"`
	// FreshPairAccuracy is the implicit-reward accuracy of the policy after phase k-1 on phase k's
	// pairs before training on them (phases >= 2; pipeline.PairAccuracy); TrainPairAccuracy the
	// same after training on them.
	FreshPairAccuracy stats.Stat `json:"freshPairAccuracy"`
	// FreshLengthBalanced is the fresh pairs' length-balanced accuracy (pipeline.PairAccuracy's
	// LengthBalanced: 0.5 for a length ranker); absent (N = 0) in records from before it.
	FreshLengthBalanced stats.Stat `json:"freshLengthBalanced"`
	TrainPairAccuracy   stats.Stat `json:"trainPairAccuracy"`
	OptimizerSteps      stats.Stat `json:"optimizerSteps"`
}

// expRun is one finished run: its record and its reward-KL frontier.
type expRun struct {
	*RunRecord
	Front []stats.KLPoint
	// Trained are the KLs of the evaluations after training (phases >= 1).
	Trained []float64
}

func (r *expRun) final() *EvalRecord { return r.Evals[len(r.Evals)-1] }

// newExpRun computes the run's frontier from its evaluations.
func newExpRun(r *RunRecord) *expRun {
	e := &expRun{RunRecord: r}
	for k, ev := range r.Evals {
		if ev != nil {
			// KL >= 0; a negative estimate is sampling noise around a policy at the initial model.
			kl := math.Max(ev.KLToInitial, 0)
			e.Front = append(e.Front, stats.KLPoint{KL: kl, Reward: ev.GoldReward, PerPrompt: ev.SampleGold})
			if k > 0 {
				e.Trained = append(e.Trained, kl)
			}
		}
	}
	e.Front = stats.Frontier(e.Front)
	return e
}

var runDirRE = regexp.MustCompile(`^(.+)-s([0-9]+)$`)

// BuildReport aggregates an experiment's runs per arm and writes the page and its plots. With
// opt.Out it reads the runs of DIR/runs, writes their records (opt.RecordsOut, default
// DIR/records.json) and DIR/report.json; with opt.Records it reads a records file instead and
// needs no run folder. Either way the numbers are computed from the records as read back from
// their file.
func BuildReport(x *Experiment, opt ReportOptions) (*Report, error) {
	var recs *Records
	var recordsPath string
	recordsBytes := 0
	switch {
	case opt.Out != "" && opt.Records != "":
		return nil, errors.New("give --out (the runs' folder) or --records (a records file), not both")
	case opt.Records != "":
		var err error
		if recs, err = ReadRecords(opt.Records); err != nil {
			return nil, err
		}
		recordsPath = opt.Records
	case opt.Out != "":
		collected, err := collectRecords(x, opt.Out, opt.Seeds)
		if err != nil {
			return nil, err
		}
		path := opt.RecordsOut
		if path == "" {
			path = filepath.Join(opt.Out, RecordsFile)
		}
		if recordsPath, recordsBytes, err = WriteRecords(path, collected); err != nil {
			return nil, err
		}
		if recs, err = ReadRecords(recordsPath); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("give --out (the runs' folder) or --records (a records file)")
	}
	rep, err := reportFromRecords(x, recs, opt.Seeds, opt.Resamples)
	if err != nil {
		return nil, err
	}
	rep.Records, rep.RecordsBytes = hideOut(recordsPath, opt.Out), recordsBytes
	if opt.Command == "" {
		opt.Command = ReportCommand(x.Path, rep.Records, opt)
	}
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
		md, err := rep.markdown(x, opt, recs, files)
		if err != nil {
			return nil, err
		}
		rep.Markdown = md
		if err := writeFileAtomic(opt.Doc, []byte(md)); err != nil {
			return nil, err
		}
	}
	if opt.Out != "" {
		// A standard deviation over one seed is NaN, which encoding/json refuses: write it as null.
		if err := writeJSONAtomic(filepath.Join(opt.Out, "report.json"), jsonSafe(reflect.ValueOf(rep))); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// ReportCommand is the command that regenerates a page from its records file alone.
func ReportCommand(file, records string, opt ReportOptions) string {
	c := fmt.Sprintf("bpo experiment report -f %s --records %s --doc %s", file, records, opt.Doc)
	if len(opt.Seeds) > 0 {
		c += " --seeds " + joinSeeds(opt.Seeds)
	}
	if opt.PlotDir != "" {
		c += " --plots " + opt.PlotDir
	}
	if opt.Notes != "" {
		c += " --notes " + opt.Notes
	}
	return c
}

func joinSeeds(seeds []int64) string {
	s := make([]string, len(seeds))
	for i, v := range seeds {
		s[i] = strconv.FormatInt(v, 10)
	}
	return strings.Join(s, ",")
}

// reportFromRecords aggregates the records of the given seeds (default: the records' seeds).
func reportFromRecords(x *Experiment, recs *Records, seeds []int64, resamples int) (*Report, error) {
	if len(seeds) == 0 {
		seeds = recs.Seeds
	}
	if len(seeds) == 0 {
		return nil, fmt.Errorf("the records of %s hold no seeds", recs.Name)
	}
	rep := &Report{Name: x.Name, Split: recs.Split, Baseline: x.Baseline, Seeds: seeds, StageSeconds: map[string]float64{}, KLBand: x.KLBandOrDefault()}
	// What the file gives today, to flag runs made from an older recipe.
	current := map[string]*v1alpha1.AlignmentRun{}
	if rs, err := x.Runs(x.ArmNames(), seeds[:1], recs.Split, false); err == nil {
		for _, r := range rs {
			current[r.Arm] = r.AR
		}
	}
	var missing []string
	for _, a := range x.Arms {
		st := ArmStats{Arm: a.Name, Description: a.Description}
		for _, s := range x.ArmSeeds(a.Name, seeds) {
			r := recs.run(a.Name, s)
			if r == nil {
				missing = append(missing, RunName(a.Name, s))
				continue
			}
			st.runs = append(st.runs, newExpRun(r))
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
			if r.final().Split != recs.Split {
				return nil, fmt.Errorf("run %s was evaluated on the %s split, the experiment on %s", r.Name, r.final().Split, recs.Split)
			}
			rep.WallSeconds += r.WallSeconds
			for k, v := range r.StageSeconds {
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
		return nil, fmt.Errorf("baseline arm %s has no finished runs", x.Baseline)
	}
	rep.Initial = initialStats(base)
	if resamples <= 0 {
		resamples = stats.BootstrapResamples
	}
	var err error
	for i := range rep.Arms {
		st := &rep.Arms[i]
		if st.Arm == x.Baseline || len(st.runs) == 0 {
			continue
		}
		if st.Deltas, err = pairedDiffs(st, base, resamples); err != nil {
			return nil, err
		}
	}
	for _, c := range x.Comparisons {
		cs := ComparisonStats{Comparison: c}
		if a, b := rep.arm(c.Arm), rep.arm(c.Against); len(a.runs) > 0 && len(b.runs) > 0 {
			if cs.Deltas, err = pairedDiffs(a, b, resamples); err != nil {
				return nil, err
			}
		}
		rep.Comparisons = append(rep.Comparisons, cs)
	}
	rep.matchedKL()
	if err := rep.frontierGroups(x, resamples); err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		rep.Checks = append([]string{fmt.Sprintf("%d run(s) not finished and left out: %s", len(missing), strings.Join(missing, ", "))}, rep.Checks...)
	}
	rep.addChecks()
	return rep, nil
}

func (rep *Report) arm(name string) *ArmStats {
	for i := range rep.Arms {
		if rep.Arms[i].Arm == name {
			return &rep.Arms[i]
		}
	}
	return nil
}

func sameRecipe(a, b v1alpha1.AlignmentRunSpec) bool {
	// Records keep the spec as it was defaulted then; fields added since take their defaults.
	ra, rb := v1alpha1.AlignmentRun{Spec: *a.DeepCopy()}, v1alpha1.AlignmentRun{Spec: *b.DeepCopy()}
	ra.SetDefaults()
	rb.SetDefaults()
	a, b = ra.Spec, rb.Spec
	a.Workspace, b.Workspace = v1alpha1.WorkspaceSpec{}, v1alpha1.WorkspaceSpec{}
	a.Seed, b.Seed = nil, nil
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
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
