package experiment

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/trainer/annotator"
)

// Files an experiment keeps next to the workspaces of its runs.
const (
	// RecordFile is DIR/experiment.json: the split and the commands that made the runs.
	RecordFile = "experiment.json"
	// RunManifestFile is DIR/runs/<run>/run.yaml: the manifest the run was made from
	// (`bpo run -f` takes it as it is).
	RunManifestFile = pipeline.ManifestFile
	// RunTimingFile is DIR/runs/<run>/timing.json.
	RunTimingFile = "timing.json"
	// RunSummaryFile is DIR/runs/<run>/summary.json: the per-phase summaries of RunAll.
	RunSummaryFile = "summary.json"
)

// RunsDir is DIR/runs, the workspace volume root of an experiment's runs.
func RunsDir(out string) string { return filepath.Join(out, "runs") }

// RunOptions configure RunGrid.
type RunOptions struct {
	Out      string   // DIR
	Seeds    []int64  // required (see Experiment.SeedsOrDefault)
	Arms     []string // empty: all
	Split    string   // "" : the file's split, else eval
	Parallel int      // runs at a time (default 1)
	// Command is the command line, recorded in DIR/experiment.json for the report.
	Command string
	// Out receives one line per finished run; Log receives start lines and notes.
	Stdout, Log io.Writer
	// Scorer replaces the annotator the spec names (tests).
	Scorer annotator.Scorer
}

// RunTiming is DIR/runs/<run>/timing.json.
type RunTiming struct {
	Run   string `json:"run"`
	Arm   string `json:"arm"`
	Seed  int64  `json:"seed"`
	Split string `json:"split"`
	// Complete is set once every stage finished and the run's report was written.
	Complete bool `json:"complete"`
	// WallSeconds is the wall time of all the sessions that worked on the run (a resumed
	// run adds the time of each session; a session that found the run complete adds none).
	WallSeconds float64         `json:"wallSeconds"`
	Sessions    []TimingSession `json:"sessions"`
	// StageSeconds is the sum of the stages' own durations (from their done markers), by stage.
	StageSeconds map[string]float64 `json:"stageSeconds"`
}

// TimingSession is one invocation that worked on a run.
type TimingSession struct {
	Start    time.Time `json:"start"`
	Seconds  float64   `json:"seconds"`
	Parallel int       `json:"parallel"`
	Error    string    `json:"error,omitempty"`
}

// Record is DIR/experiment.json.
type Record struct {
	Name     string   `json:"name"`
	File     string   `json:"file"`
	Split    string   `json:"split"`
	Commands []string `json:"commands"`
}

// RunOutcome is what one finished run reports.
type RunOutcome struct {
	Run         Run
	Final       *pipeline.EvalResult
	WallSeconds float64
	Skipped     bool // already complete before this session
	Err         error
}

// RunGrid runs every selected arm for every seed into DIR/runs, Parallel at a time.
// Finished stages are skipped, so an interrupted experiment resumes where it stopped. A run
// that fails does not stop the others; the error lists every failed run.
func RunGrid(x *Experiment, opt RunOptions) ([]RunOutcome, error) {
	split, err := x.SplitOrDefault(opt.Split)
	if err != nil {
		return nil, err
	}
	arms, err := x.SelectArms(opt.Arms)
	if err != nil {
		return nil, err
	}
	if len(opt.Seeds) == 0 {
		return nil, errors.New("no seeds")
	}
	runs, err := x.Runs(arms, opt.Seeds, split, false)
	if err != nil {
		return nil, err
	}
	if err := recordExperiment(x, opt.Out, split, opt.Command); err != nil {
		return nil, err
	}
	volume := RunsDir(opt.Out)
	// Check every existing workspace before starting anything.
	for _, r := range runs {
		if err := checkRunManifest(volume, r); err != nil {
			return nil, err
		}
	}
	if err := prepareModels(x, volume); err != nil {
		return nil, err
	}
	par := max(opt.Parallel, 1)
	stdout, log := opt.Stdout, opt.Log
	if stdout == nil {
		stdout = io.Discard
	}
	if log == nil {
		log = io.Discard
	}
	var mu sync.Mutex
	outcomes := make([]RunOutcome, len(runs))
	jobs := make(chan int)
	var wg sync.WaitGroup
	finished := 0
	for range min(par, len(runs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				r := runs[i]
				mu.Lock()
				fmt.Fprintf(log, "start %s (%s, seed %d)\n", r.Name, r.Arm, r.Seed)
				mu.Unlock()
				o := runOne(volume, r, split, par, opt.Scorer)
				mu.Lock()
				finished++
				outcomes[i] = o
				fmt.Fprintln(stdout, formatOutcome(o, finished, len(runs)))
				mu.Unlock()
			}
		}()
	}
	for i := range runs {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	var errs []error
	for _, o := range outcomes {
		if o.Err != nil {
			errs = append(errs, fmt.Errorf("run %s: %w", o.Run.Name, o.Err))
		}
	}
	return outcomes, errors.Join(errs...)
}

func formatOutcome(o RunOutcome, done, total int) string {
	head := fmt.Sprintf("[%d/%d] %-28s", done, total, o.Run.Name)
	if o.Err != nil {
		return head + " FAILED: " + firstLine(o.Err.Error())
	}
	s := fmt.Sprintf("%s win %.3f  held-out win %.3f  gold %.3f  KL %.2f  wall %s",
		head, o.Final.WinRate, o.Final.HeldOutWinRate, o.Final.GoldReward, o.Final.KLToInitial, fmtDuration(o.WallSeconds))
	if o.Skipped {
		s += "  (already complete)"
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func fmtDuration(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

// recordExperiment writes DIR/experiment.json and refuses to mix splits in one DIR: the
// evaluations live in the runs' workspaces and would be silently reused.
func recordExperiment(x *Experiment, out, split, command string) error {
	path := filepath.Join(out, RecordFile)
	var rec Record
	switch err := readJSON(path, &rec); {
	case err == nil:
		if rec.Split != split {
			return fmt.Errorf("%s holds runs evaluated on the %s split; this invocation asks for %s: use another --out (never mix validation and eval runs)",
				out, rec.Split, split)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return err
	}
	rec.Name, rec.File, rec.Split = x.Name, x.Path, split
	if command != "" && !slices.Contains(rec.Commands, command) {
		rec.Commands = append(rec.Commands, command)
	}
	return writeJSONAtomic(path, rec)
}

// ReadRecord reads DIR/experiment.json.
func ReadRecord(out string) (*Record, error) {
	var rec Record
	if err := readJSON(filepath.Join(out, RecordFile), &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

// checkRunManifest refuses to resume a workspace made from a different recipe.
func checkRunManifest(volume string, r Run) error {
	path := filepath.Join(volume, r.Name, RunManifestFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	old, err := pipeline.DecodeRun(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	a, b := old.Spec.DeepCopy(), r.AR.Spec.DeepCopy()
	a.Workspace, b.Workspace = v1alpha1.WorkspaceSpec{}, v1alpha1.WorkspaceSpec{}
	if !reflect.DeepEqual(a, b) {
		ja, _ := yaml.Marshal(a)
		jb, _ := yaml.Marshal(b)
		return fmt.Errorf("arm %s (run %s): the workspace %s was made from a different recipe (%s); delete that folder to rerun it, or use another --out",
			r.Arm, r.Name, filepath.Dir(path), firstDiff(string(ja), string(jb)))
	}
	return nil
}

func firstDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return fmt.Sprintf("was %q, now %q", strings.TrimSpace(la[i]), strings.TrimSpace(lb[i]))
		}
	}
	return "lengths differ"
}

// runOne runs (or resumes) one run and records its timing.
func runOne(volume string, r Run, split string, parallel int, scorer annotator.Scorer) RunOutcome {
	o := RunOutcome{Run: r}
	run, err := pipeline.NewRun(r.AR)
	if err != nil {
		o.Err = err
		return o
	}
	env, err := pipeline.NewEnv(run, volume)
	if err != nil {
		o.Err = err
		return o
	}
	env.EvalSplit = split
	if scorer != nil {
		env.Scorer = scorer
	}
	timingPath := filepath.Join(env.WS.Root, RunTimingFile)
	t := RunTiming{Run: r.Name, Arm: r.Arm, Seed: r.Seed, Split: split}
	if err := readJSON(timingPath, &t); err != nil && !errors.Is(err, os.ErrNotExist) {
		o.Err = err
		return o
	}
	if t.Split != "" && t.Split != split {
		o.Err = fmt.Errorf("%s was evaluated on the %s split, not %s", env.WS.Root, t.Split, split)
		return o
	}
	if t.Complete {
		_, serr := os.Stat(filepath.Join(env.WS.Root, RunSummaryFile))
		if final, err := env.LoadEval(run.Phases()); err == nil && serr == nil {
			o.Final, o.WallSeconds, o.Skipped = final, t.WallSeconds, true
			return o
		}
		t.Complete = false
	}
	if err := writeFileAtomic(filepath.Join(env.WS.Root, RunManifestFile), r.Manifest); err != nil {
		o.Err = err
		return o
	}
	start := time.Now()
	sess := TimingSession{Start: start.UTC().Truncate(time.Second), Parallel: parallel}
	sums, err := env.RunAll(pipeline.RunHooks{})
	if err == nil {
		err = writeJSONAtomic(filepath.Join(env.WS.Root, RunSummaryFile), sums)
	}
	var final *pipeline.EvalResult
	if err == nil {
		final, err = env.LoadEval(run.Phases())
	}
	sess.Seconds = time.Since(start).Seconds()
	if err != nil {
		sess.Error = firstLine(err.Error())
	}
	t.Sessions = append(t.Sessions, sess)
	t.WallSeconds += sess.Seconds
	t.Complete = err == nil
	t.StageSeconds = stageSeconds(env)
	if werr := writeJSONAtomic(timingPath, t); werr != nil && err == nil {
		err = werr
	}
	o.Final, o.WallSeconds, o.Err = final, t.WallSeconds, err
	return o
}

// stageSeconds sums the stages' own durations from their done markers.
func stageSeconds(e *pipeline.Env) map[string]float64 {
	out := map[string]float64{}
	add := func(k int, stage string, index int) {
		if r, ok := e.Done(k, stage, index); ok {
			out[stage] += r.DurationSeconds
		}
	}
	add(0, v1alpha1.StageEval, -1)
	for k := 1; k <= e.Run.Phases(); k++ {
		for s := range e.Run.SampleShards() {
			add(k, v1alpha1.StageSample, s)
		}
		for s := range e.Run.LabelShards() {
			add(k, v1alpha1.StageLabel, s)
		}
		for m := range e.Run.Members() {
			add(k, v1alpha1.StageTrain, m)
		}
		add(k, v1alpha1.StageEval, -1)
	}
	return out
}
