package experiment

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"sigs.k8s.io/yaml"

	"github.com/bpo-dev/bpo/experiment/stats"
)

// An experiment file (experiments/*.yaml) is a grid of arms over one base AlignmentRun:
//
//	name: paper                 # optional label (default: the file's base name)
//	baseline: offline-dpo       # the arm every other arm is compared against
//	split: eval                 # eval (default) or validation; `experiment run --split` overrides
//	seeds: [1, 2, 3]            # default seeds when --seeds is not given
//	splitPatches:               # optional merge patch on the base per split (e.g. evalPrompts)
//	  validation: {spec: {budget: {evalPrompts: 180}}}
//	base: {apiVersion: ..., kind: AlignmentRun, metadata: ..., spec: ...}
//	arms:
//	- name: offline-dpo
//	  main: true                # drawn in the frontier and per-phase plots (default: all arms)
//	  description: ...
//	  patch: {spec: {trustRegion: {reference: Initial, phases: 1}}}   # JSON merge patch (RFC 7386)
//	- name: offline-dpo-lr1e-3
//	  group: offline-dpo        # another operating point of the same schedule (default group: own name)
//	  patch: {spec: {trustRegion: {reference: Initial, phases: 1}, trainer: {learningRate: "1e-3"}}}
//	  seeds: [1, 2, 3, 4, 5]    # this arm's seeds (default: the file's); --seeds selects among them
//	matchedKL: [0.5, 2]         # KLs at which the report reads each group's pooled frontier
//	comparisons:                # paired differences beyond "every arm against the baseline"
//	- {arm: bpo-f2, against: online-f2, why: "the paper's question: behavior vs fixed reference"}
//	klBand: 0.5                 # read a frontier only within this KL of a trained evaluation
//
// Run <arm> with seed s is the base, merged with splitPatches[split], merged with the arm's
// patch, with metadata.name = <arm>-s<s> and spec.seed = s.

// File is the YAML shape of an experiment file.
type File struct {
	Name         string                     `json:"name,omitempty"`
	Description  string                     `json:"description,omitempty"`
	Baseline     string                     `json:"baseline"`
	Split        string                     `json:"split,omitempty"`
	Seeds        []int64                    `json:"seeds,omitempty"`
	SplitPatches map[string]json.RawMessage `json:"splitPatches,omitempty"`
	Base         json.RawMessage            `json:"base"`
	Arms         []Arm                      `json:"arms"`
	// MatchedKL lists the KLs (nats/sequence) at which the report reads the groups' pooled
	// frontiers (default: the common KL, the smallest maximum KL over all runs).
	MatchedKL []float64 `json:"matchedKL,omitempty"`
	// KLBand (nats/sequence) is how close to a trained evaluation a frontier must be to be read
	// at a KL (default stats.DefaultKLBand): between two evaluations further apart than twice
	// the band, the frontier is a straight line no trained policy was measured on.
	KLBand *float64 `json:"klBand,omitempty"`
	// Models are model folders `experiment run` derives from built-in models before any run
	// (models.go), e.g. one adapter that starts where a 3-member ensemble starts.
	Models []DerivedModel `json:"models,omitempty"`
	// Comparisons are paired differences the report computes besides every arm against the
	// baseline: the contrasts an arm was added for (BPO against a fixed reference at the same
	// F, a loss's BPO arm against its offline arm, the two arms of a regime cell).
	Comparisons []Comparison `json:"comparisons,omitempty"`
}

// Comparison asks the report for Arm minus Against, paired by seed and prompt.
type Comparison struct {
	Arm     string `json:"arm"`
	Against string `json:"against"`
	// Why is the question the contrast answers, printed next to it.
	Why string `json:"why,omitempty"`
}

// KLBandOrDefault is the file's klBand, else stats.DefaultKLBand.
func (x *Experiment) KLBandOrDefault() float64 {
	if x.KLBand != nil {
		return *x.KLBand
	}
	return stats.DefaultKLBand
}

// Arm is one arm of the grid: a merge patch of the base manifest.
type Arm struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Main        bool   `json:"main,omitempty"`
	// Group names the schedule this arm is one operating point of (default: the arm itself);
	// the report pools a group's runs into one reward-KL frontier per seed.
	Group string          `json:"group,omitempty"`
	Patch json.RawMessage `json:"patch,omitempty"`
	// Seeds, when set, are the seeds this arm runs (default: the file's seeds), e.g. five seeds
	// for the main arms and three for the ablations. `--seeds` selects among them.
	Seeds []int64 `json:"seeds,omitempty"`
}

// Experiment is a loaded, checked experiment file.
type Experiment struct {
	File
	// Path is the file it was read from (for messages and the regenerate command).
	Path string
	// base is the base manifest as JSON, after any PatchBase calls.
	base []byte
}

// Split names of the held-out prompts.
const (
	SplitEval       = "eval"
	SplitValidation = "validation"
)

var armNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Load reads and checks an experiment file. Unknown fields are errors.
func Load(path string) (*Experiment, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	x, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	x.Path = path
	if x.Name == "" {
		x.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	return x, nil
}

// Decode parses an experiment file and checks its arms' names, the baseline,
// the split and the patches' shape (the merged manifests are validated by Runs).
func Decode(data []byte) (*Experiment, error) {
	var f File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("not a valid experiment file: %v", err)
	}
	x := &Experiment{File: f}
	if len(bytes.TrimSpace(f.Base)) == 0 || string(bytes.TrimSpace(f.Base)) == "null" {
		return nil, errors.New("base: missing: give the base AlignmentRun manifest under base:")
	}
	if !isJSONObject(f.Base) {
		return nil, errors.New("base: must be an AlignmentRun manifest (a mapping)")
	}
	x.base = []byte(f.Base)
	if err := x.checkNoSeed("base", f.Base); err != nil {
		return nil, err
	}
	if len(f.Arms) == 0 {
		return nil, errors.New("arms: the file lists no arms")
	}
	seen := map[string]bool{}
	for i, a := range f.Arms {
		switch {
		case a.Name == "":
			return nil, fmt.Errorf("arms[%d]: name is missing", i)
		case !armNameRE.MatchString(a.Name):
			return nil, fmt.Errorf("arm %q: name must be lower-case letters, digits and '-', starting and ending with a letter or digit (it prefixes the run names)", a.Name)
		case seen[a.Name]:
			return nil, fmt.Errorf("arm %q: listed twice", a.Name)
		}
		seen[a.Name] = true
		if p := bytes.TrimSpace(a.Patch); len(p) > 0 && string(p) != "null" && !isJSONObject(p) {
			return nil, fmt.Errorf("arm %s: patch must be a mapping (a JSON merge patch of the base manifest)", a.Name)
		}
		if err := x.checkNoSeed("arm "+a.Name+": patch", a.Patch); err != nil {
			return nil, err
		}
	}
	if f.Baseline == "" {
		return nil, errors.New("baseline: name the arm the others are compared against")
	}
	if !seen[f.Baseline] {
		return nil, fmt.Errorf("baseline: %q is not one of the arms (%s)", f.Baseline, strings.Join(x.ArmNames(), ", "))
	}
	if _, err := x.SplitOrDefault(""); err != nil {
		return nil, err
	}
	for s, p := range f.SplitPatches {
		if s != SplitEval && s != SplitValidation {
			return nil, fmt.Errorf("splitPatches: unknown split %q (eval or validation)", s)
		}
		if !isJSONObject(p) {
			return nil, fmt.Errorf("splitPatches.%s: must be a mapping (a JSON merge patch of the base manifest)", s)
		}
		if err := x.checkNoSeed("splitPatches."+s, p); err != nil {
			return nil, err
		}
	}
	for i, k := range f.MatchedKL {
		if !(k >= 0) || math.IsInf(k, 0) {
			return nil, fmt.Errorf("matchedKL[%d]: %v is not a KL: give non-negative nats per sequence, e.g. [0.5, 3]", i, k)
		}
	}
	for _, d := range f.Models {
		if err := d.check(); err != nil {
			return nil, err
		}
	}
	if b := f.KLBand; b != nil && (!(*b > 0) || math.IsInf(*b, 0)) {
		return nil, fmt.Errorf("klBand: %v is not a band: give a positive KL in nats per sequence, e.g. 0.5", *b)
	}
	for _, a := range f.Arms {
		if a.Group != "" && !armNameRE.MatchString(a.Group) {
			return nil, fmt.Errorf("arm %s: group %q must be lower-case letters, digits and '-'", a.Name, a.Group)
		}
	}
	for i, c := range f.Comparisons {
		switch {
		case !seen[c.Arm]:
			return nil, fmt.Errorf("comparisons[%d].arm: %q is not one of the arms (%s)", i, c.Arm, strings.Join(x.ArmNames(), ", "))
		case !seen[c.Against]:
			return nil, fmt.Errorf("comparisons[%d].against: %q is not one of the arms (%s)", i, c.Against, strings.Join(x.ArmNames(), ", "))
		case c.Arm == c.Against:
			return nil, fmt.Errorf("comparisons[%d]: %s against itself; name two different arms", i, c.Arm)
		}
	}
	for _, s := range f.Seeds {
		if s < 1 {
			return nil, fmt.Errorf("seeds: %d is not a positive integer", s)
		}
	}
	for _, a := range f.Arms {
		for i, s := range a.Seeds {
			if s < 1 || slices.Contains(a.Seeds[:i], s) {
				return nil, fmt.Errorf("arm %s: seeds: %d is not a new positive integer", a.Name, s)
			}
		}
	}
	return x, nil
}

func isJSONObject(b []byte) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(b, &m) == nil && m != nil
}

// checkNoSeed refuses spec.seed in the base or a patch: the experiment sets it per run.
func (x *Experiment) checkNoSeed(where string, doc json.RawMessage) error {
	var m struct {
		Spec map[string]json.RawMessage `json:"spec"`
	}
	if len(bytes.TrimSpace(doc)) == 0 || json.Unmarshal(doc, &m) != nil {
		return nil
	}
	if _, ok := m.Spec["seed"]; ok {
		return fmt.Errorf("%s: spec.seed is set per run from --seeds; remove it", where)
	}
	return nil
}

// PatchBase merges an extra JSON merge patch (YAML or JSON) into the base manifest, e.g. to
// point a grid at a local model folder.
func (x *Experiment) PatchBase(patchYAML []byte) error {
	p, err := yaml.YAMLToJSON(patchYAML)
	if err != nil {
		return fmt.Errorf("base patch: %v", err)
	}
	merged, err := jsonpatch.MergePatch(x.base, p)
	if err != nil {
		return fmt.Errorf("base patch: %v", err)
	}
	if err := x.checkNoSeed("base patch", p); err != nil {
		return err
	}
	x.base = merged
	return nil
}

// ArmNames lists the arms in file order.
func (x *Experiment) ArmNames() []string {
	out := make([]string, len(x.Arms))
	for i, a := range x.Arms {
		out[i] = a.Name
	}
	return out
}

// Arm returns the named arm.
func (x *Experiment) Arm(name string) (Arm, bool) {
	for _, a := range x.Arms {
		if a.Name == name {
			return a, true
		}
	}
	return Arm{}, false
}

// MainArms are the arms marked main (all arms when none is).
func (x *Experiment) MainArms() []string {
	var out []string
	for _, a := range x.Arms {
		if a.Main {
			out = append(out, a.Name)
		}
	}
	if len(out) == 0 {
		return x.ArmNames()
	}
	return out
}

// SplitOrDefault resolves the held-out split: the flag when set, else the file's, else eval.
func (x *Experiment) SplitOrDefault(flag string) (string, error) {
	s := flag
	if s == "" {
		s = x.Split
	}
	if s == "" {
		s = SplitEval
	}
	if s != SplitEval && s != SplitValidation {
		return "", fmt.Errorf("split %q: want eval or validation", s)
	}
	return s, nil
}

// SelectArms checks a --arms list (empty: all arms, in file order).
func (x *Experiment) SelectArms(names []string) ([]string, error) {
	if len(names) == 0 {
		return x.ArmNames(), nil
	}
	var out []string
	for _, n := range names {
		if _, ok := x.Arm(n); !ok {
			return nil, fmt.Errorf("--arms: %q is not an arm of %s (arms: %s)", n, x.Name, strings.Join(x.ArmNames(), ", "))
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// ParseSeeds parses "1,2,3".
func ParseSeeds(s string) ([]int64, error) {
	var out []int64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("--seeds: %q is not a positive integer", f)
		}
		if slices.Contains(out, v) {
			return nil, fmt.Errorf("--seeds: %d is listed twice", v)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("--seeds: give at least one seed, e.g. 1,2,3")
	}
	return out, nil
}

// SeedsOrDefault returns the given seeds, else every seed the file names (its seeds and the
// arms' own, in increasing order), else an error.
func (x *Experiment) SeedsOrDefault(seeds []int64) ([]int64, error) {
	if len(seeds) > 0 {
		return seeds, nil
	}
	all := slices.Clone(x.Seeds)
	for _, a := range x.Arms {
		if len(a.Seeds) == 0 && len(x.Seeds) == 0 {
			return nil, fmt.Errorf("%s: arm %s has no seeds and the file none: add seeds: [1, 2, 3] (to the file or the arm), or pass --seeds 1,2,3", x.Name, a.Name)
		}
		for _, s := range a.Seeds {
			if !slices.Contains(all, s) {
				all = append(all, s)
			}
		}
	}
	slices.Sort(all)
	return all, nil
}

// ArmSeeds are the seeds of seeds an arm runs: those among its own seeds, else among the
// file's seeds (an arm with neither runs every seed given).
func (x *Experiment) ArmSeeds(arm string, seeds []int64) []int64 {
	a, _ := x.Arm(arm)
	own := a.Seeds
	if len(own) == 0 {
		own = x.Seeds
	}
	if len(own) == 0 {
		return seeds
	}
	var out []int64
	for _, s := range seeds {
		if slices.Contains(own, s) {
			out = append(out, s)
		}
	}
	return out
}
