package experiment

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
)

// The records of an experiment are everything its page is computed from, per run, in one small
// file that can be committed: `bpo experiment report --records FILE` regenerates the page from it
// without the run folders (which hold checkpoints and samples: hundreds of MB). The report always
// goes through the records, reading them back from the file it wrote, so a page computed from the
// run folders and one regenerated from the records are the same bytes.

// RecordsVersion is the format of the records file; readers refuse another.
const RecordsVersion = 1

// RecordsFile is the default records file, DIR/records.json.
const RecordsFile = "records.json"

// recordsGzipAbove is the size past which the records are written gzipped (FILE.gz): per-prompt
// vectors of a whole grid run to a few MB of JSON, which compresses about 2.5x.
const recordsGzipAbove = 2 << 20

// OutPlaceholder stands for the experiment folder (--out) in the commands the records keep: the
// folder is a path on one machine, which a committed file should not carry.
const OutPlaceholder = "$OUT"

// Records is the records file.
type Records struct {
	Version  int    `json:"version"`
	Name     string `json:"experiment"`
	Split    string `json:"split"`
	Baseline string `json:"baseline"`
	// Seeds are the seeds the report looked for (runs of other seeds are not recorded).
	Seeds []int64 `json:"seeds"`
	// Commands are the `bpo experiment run` commands that made the runs, the experiment folder
	// written as $OUT.
	Commands []string `json:"commands"`
	// Models describe the runs' base models (from their config.json), one line each.
	Models []string    `json:"models"`
	Runs   []RunRecord `json:"runs"`
}

// RunRecord is one finished run.
type RunRecord struct {
	Arm  string `json:"arm"`
	Seed int64  `json:"seed"`
	Name string `json:"name"`
	// Spec is the run's defaulted spec, without the workspace (a place, not a setting).
	Spec v1alpha1.AlignmentRunSpec `json:"spec"`
	// Evals are the evaluations by phase (phase 0: the initial model), null where a phase was not
	// evaluated.
	Evals []*EvalRecord `json:"evals"`
	// Phases are the per-phase summaries of the run (summary.json): pairs kept, ties, training
	// diagnostics, fresh-pair accuracy.
	Phases []pipeline.PhaseSummary `json:"phases"`
	// OptimizerSteps are the optimizer steps member 0 took in each phase (its train stage's
	// result; the members train on the same pairs, so they take as many).
	OptimizerSteps []int64 `json:"optimizerSteps"`
	// WallSeconds and StageSeconds are the run's timing.json.
	WallSeconds  float64            `json:"wallSeconds"`
	StageSeconds map[string]float64 `json:"stageSeconds"`
}

// EvalRecord is one evaluation: the numbers of the eval stage's result.json and, prompt by prompt
// in prompt order, the outcomes the bootstraps resample. The greedy outcomes (win, gold, heldOut)
// and the samples' held-out scores are kept for the last phase only, which is all the page pairs;
// the samples' gold rewards for every phase, which the matched-KL comparison reads.
type EvalRecord struct {
	Phase          int     `json:"phase"`
	Split          string  `json:"split"`
	Prompts        int     `json:"prompts"`
	Samples        int     `json:"samples"`
	WinRate        float64 `json:"winRate"`
	TieRate        float64 `json:"tieRate"`
	HeldOutWinRate float64 `json:"heldOutWinRate"`
	GreedyReward   float64 `json:"greedyReward"`
	GoldReward     float64 `json:"goldReward"`
	HeldOutReward  float64 `json:"heldOutReward"`
	KLToInitial    float64 `json:"klToInitial"`
	MeanLength     float64 `json:"meanLength"`
	Distinct1      float64 `json:"distinct1"`
	Distinct2      float64 `json:"distinct2"`

	// Win is 1 win, 0.5 tie, 0 loss of the greedy output against the human reference (gold
	// annotator); Gold and HeldOut its scores.
	Win     []float64 `json:"win,omitempty"`
	Gold    []float64 `json:"gold,omitempty"`
	HeldOut []float64 `json:"heldOut,omitempty"`
	// SampleGold and SampleHeldOut are the mean scores of the prompt's samples; nil when the
	// evaluation did not record them (results written before they existed).
	SampleGold    []float64 `json:"sampleGold,omitempty"`
	SampleHeldOut []float64 `json:"sampleHeldOut,omitempty"`
}

// evalRecord keeps what the report needs of an evaluation; final selects the per-prompt vectors.
func evalRecord(ev *pipeline.EvalResult, final bool) *EvalRecord {
	r := &EvalRecord{Phase: ev.Phase, Split: ev.Split, Prompts: ev.Prompts, Samples: ev.Samples,
		WinRate: ev.WinRate, TieRate: ev.TieRate, HeldOutWinRate: ev.HeldOutWinRate, GreedyReward: ev.GreedyReward,
		GoldReward: ev.GoldReward, HeldOutReward: ev.HeldOutReward, KLToInitial: ev.KLToInitial,
		MeanLength: ev.MeanLength, Distinct1: ev.Distinct1, Distinct2: ev.Distinct2}
	n := len(ev.PerPrompt)
	vec := func(get func(pipeline.PromptOutcome) *float64) []float64 {
		out := make([]float64, n)
		for i, o := range ev.PerPrompt {
			p := get(o)
			if p == nil {
				return nil
			}
			out[i] = *p
		}
		return out
	}
	if n == 0 {
		return r
	}
	r.SampleGold = vec(func(o pipeline.PromptOutcome) *float64 { return o.SampleGold })
	if final {
		r.Win = vec(func(o pipeline.PromptOutcome) *float64 { return &o.Win })
		r.Gold = vec(func(o pipeline.PromptOutcome) *float64 { return &o.GoldReward })
		r.HeldOut = vec(func(o pipeline.PromptOutcome) *float64 { return &o.HeldOut })
		r.SampleHeldOut = vec(func(o pipeline.PromptOutcome) *float64 { return o.SampleHeldOut })
	}
	return r
}

// loadRunRecord reads a finished run from its workspace; os.ErrNotExist when it has not finished.
func loadRunRecord(volume, arm string, seed int64) (*RunRecord, error) {
	name := RunName(arm, seed)
	root := filepath.Join(volume, name)
	data, err := os.ReadFile(filepath.Join(root, RunManifestFile))
	if err != nil {
		return nil, err
	}
	ar, err := pipeline.DecodeRun(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(root, RunManifestFile), err)
	}
	ws := &pipeline.Workspace{Root: root}
	F := int(ar.Spec.TrustRegion.Phases)
	r := &RunRecord{Arm: arm, Seed: seed, Name: name, Spec: ar.Spec, Evals: make([]*EvalRecord, F+1)}
	r.Spec.Workspace = v1alpha1.WorkspaceSpec{}
	for k := 0; k <= F; k++ {
		var ev pipeline.EvalResult
		err := readJSON(filepath.Join(ws.EvalDir(k), "result.json"), &ev)
		switch {
		case err == nil:
			r.Evals[k] = evalRecord(&ev, k == F)
		case errors.Is(err, os.ErrNotExist):
			if k == F {
				return nil, err // not finished
			}
		default:
			return nil, err
		}
	}
	if err := readJSON(filepath.Join(root, RunSummaryFile), &r.Phases); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("run %s: %s is missing (run `bpo experiment run` again to finish it)", name, RunSummaryFile)
		}
		return nil, err
	}
	for k := 1; k <= F; k++ {
		var res v1alpha1.StageResult
		if err := readJSON(ws.DonePath(k, v1alpha1.StageTrain, 0), &res); err != nil {
			return nil, fmt.Errorf("run %s: phase %d's train result: %w", name, k, err)
		}
		r.OptimizerSteps = append(r.OptimizerSteps, res.Steps)
	}
	var t RunTiming
	if err := readJSON(filepath.Join(root, RunTimingFile), &t); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	r.WallSeconds, r.StageSeconds = t.WallSeconds, t.StageSeconds
	return r, nil
}

// collectRecords reads every finished run of the arms and seeds from DIR/runs.
func collectRecords(x *Experiment, out string, seeds []int64) (*Records, error) {
	volume := RunsDir(out)
	rec, err := ReadRecord(out)
	if err != nil {
		return nil, fmt.Errorf("%s: no experiment record (run `bpo experiment run` with this --out first): %w", out, err)
	}
	if len(seeds) == 0 {
		if seeds, err = discoverSeeds(x, volume); err != nil {
			return nil, err
		}
	}
	recs := &Records{Version: RecordsVersion, Name: x.Name, Split: rec.Split, Baseline: x.Baseline, Seeds: seeds}
	for _, c := range rec.Commands {
		recs.Commands = append(recs.Commands, hideOut(c, out))
	}
	roots := map[string]string{} // run name -> folder, for the models' config.json
	for _, a := range x.Arms {
		for _, s := range seeds {
			r, err := loadRunRecord(volume, a.Name, s)
			if errors.Is(err, os.ErrNotExist) {
				continue
			} else if err != nil {
				return nil, err
			}
			recs.Runs = append(recs.Runs, *r)
			roots[r.Name] = filepath.Join(volume, r.Name)
		}
	}
	recs.Models = modelInfo(volume, recs.Runs, roots)
	return recs, nil
}

// hideOut writes the experiment folder of a command as $OUT.
func hideOut(command, out string) string {
	if out == "" {
		return command
	}
	fields := strings.Fields(command)
	for i, f := range fields {
		if f == out || filepath.Clean(f) == filepath.Clean(out) {
			fields[i] = OutPlaceholder
		} else if rest, ok := strings.CutPrefix(f, out+string(filepath.Separator)); ok {
			fields[i] = OutPlaceholder + "/" + filepath.ToSlash(rest)
		}
	}
	return strings.Join(fields, " ")
}

// EncodeRecords is the records as JSON, one run per line (so that a changed run is a changed line).
func EncodeRecords(recs *Records) ([]byte, error) {
	head := *recs
	head.Runs = nil
	h, err := json.Marshal(head)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(bytes.TrimSuffix(h, []byte(`,"runs":null}`)))
	b.WriteString(`,"runs":[`)
	for i := range recs.Runs {
		line, err := json.Marshal(&recs.Runs[i])
		if err != nil {
			return nil, fmt.Errorf("run %s: %w", recs.Runs[i].Name, err)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n")
		b.Write(line)
	}
	b.WriteString("\n]}\n")
	return b.Bytes(), nil
}

// WriteRecords writes the records to path, gzipped when path ends in .gz or when the JSON is
// larger than 2 MB (then to path.gz). It returns the path written and its size in bytes.
func WriteRecords(path string, recs *Records) (string, int, error) {
	data, err := EncodeRecords(recs)
	if err != nil {
		return "", 0, err
	}
	if !strings.HasSuffix(path, ".gz") && len(data) > recordsGzipAbove {
		path += ".gz"
	}
	if strings.HasSuffix(path, ".gz") {
		var z bytes.Buffer
		w, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
		if _, err := w.Write(data); err != nil {
			return "", 0, err
		}
		if err := w.Close(); err != nil {
			return "", 0, err
		}
		data = z.Bytes()
	}
	return path, len(data), writeFileAtomic(path, data)
}

// ReadRecords reads a records file, gzipped or not.
func ReadRecords(path string) (*Records, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) > 2 && data[0] == 0x1f && data[1] == 0x8b {
		z, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if data, err = io.ReadAll(z); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	var recs Records
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&recs); err != nil {
		return nil, fmt.Errorf("%s: not a records file: %w", path, err)
	}
	if recs.Version != RecordsVersion {
		return nil, fmt.Errorf("%s: records version %d, this bpo reads version %d: regenerate them with `bpo experiment report --out DIR`", path, recs.Version, RecordsVersion)
	}
	return &recs, recs.check()
}

// check refuses records a report cannot be computed from, naming the run and the field.
func (recs *Records) check() error {
	seen := map[string]bool{}
	for _, r := range recs.Runs {
		if seen[r.Name] {
			return fmt.Errorf("records: run %s is listed twice", r.Name)
		}
		seen[r.Name] = true
		F := int(r.Spec.TrustRegion.Phases)
		if len(r.Evals) != F+1 || r.Evals[0] == nil || r.Evals[F] == nil {
			return fmt.Errorf("records: run %s: evals must hold phases 0..%d with the first and the last evaluated", r.Name, F)
		}
		for _, ev := range r.Evals {
			if ev == nil {
				continue
			}
			for _, v := range []float64{ev.WinRate, ev.GoldReward, ev.KLToInitial, ev.GreedyReward, ev.HeldOutReward} {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return fmt.Errorf("records: run %s phase %d: a number is not finite", r.Name, ev.Phase)
				}
			}
		}
		if !slices.Contains(recs.Seeds, r.Seed) {
			return fmt.Errorf("records: run %s has seed %d, not one of the records' seeds %v", r.Name, r.Seed, recs.Seeds)
		}
	}
	return nil
}

// run finds the record of (arm, seed).
func (recs *Records) run(arm string, seed int64) *RunRecord {
	for i := range recs.Runs {
		if r := &recs.Runs[i]; r.Arm == arm && r.Seed == seed {
			return r
		}
	}
	return nil
}
