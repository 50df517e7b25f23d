package pipeline

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

	"github.com/bpo-dev/bpo/api/v1alpha1"
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
//	matchedKL: [0.5, 2]         # KLs at which the report reads each group's pooled frontier
//
// Run <arm> with seed s is the base, merged with splitPatches[split], merged with the arm's
// patch, with metadata.name = <arm>-s<s> and spec.seed = s.

// ExperimentFile is the YAML shape of an experiment file.
type ExperimentFile struct {
	Name         string                     `json:"name,omitempty"`
	Description  string                     `json:"description,omitempty"`
	Baseline     string                     `json:"baseline"`
	Split        string                     `json:"split,omitempty"`
	Seeds        []int64                    `json:"seeds,omitempty"`
	SplitPatches map[string]json.RawMessage `json:"splitPatches,omitempty"`
	Base         json.RawMessage            `json:"base"`
	Arms         []ExperimentArm            `json:"arms"`
	// MatchedKL lists the KLs (nats/sequence) at which the report reads the groups' pooled
	// frontiers (default: the common KL, the smallest maximum KL over all runs).
	MatchedKL []float64 `json:"matchedKL,omitempty"`
}

// ExperimentArm is one arm of the grid: a merge patch of the base manifest.
type ExperimentArm struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Main        bool   `json:"main,omitempty"`
	// Group names the schedule this arm is one operating point of (default: the arm itself);
	// the report pools a group's runs into one reward-KL frontier per seed.
	Group string          `json:"group,omitempty"`
	Patch json.RawMessage `json:"patch,omitempty"`
}

// Experiment is a loaded, checked experiment file.
type Experiment struct {
	ExperimentFile
	// Path is the file it was read from (for messages and the regenerate command).
	Path string
	// base is the base manifest as JSON, after any PatchBase calls.
	base []byte
}

// ExperimentRun is one (arm, seed) run, resolved and validated.
type ExperimentRun struct {
	Arm  string
	Seed int64
	Name string
	// Manifest is the AlignmentRun as written (not defaulted): what render prints and what
	// the run's workspace records as run.yaml.
	Manifest []byte
	// AR is the defaulted, validated AlignmentRun.
	AR *v1alpha1.AlignmentRun
}

// Split names of the held-out prompts.
const (
	SplitEval       = "eval"
	SplitValidation = "validation"
)

var armNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// LoadExperiment reads and checks an experiment file. Unknown fields are errors.
func LoadExperiment(path string) (*Experiment, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	x, err := DecodeExperiment(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	x.Path = path
	if x.Name == "" {
		x.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	return x, nil
}

// DecodeExperiment parses an experiment file and checks its arms' names, the baseline,
// the split and the patches' shape (the merged manifests are validated by Runs).
func DecodeExperiment(data []byte) (*Experiment, error) {
	var f ExperimentFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("not a valid experiment file: %v", err)
	}
	x := &Experiment{ExperimentFile: f}
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
	for _, a := range f.Arms {
		if a.Group != "" && !armNameRE.MatchString(a.Group) {
			return nil, fmt.Errorf("arm %s: group %q must be lower-case letters, digits and '-'", a.Name, a.Group)
		}
	}
	for _, s := range f.Seeds {
		if s < 1 {
			return nil, fmt.Errorf("seeds: %d is not a positive integer", s)
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
func (x *Experiment) Arm(name string) (ExperimentArm, bool) {
	for _, a := range x.Arms {
		if a.Name == name {
			return a, true
		}
	}
	return ExperimentArm{}, false
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

// SeedsOrDefault returns the given seeds, else the file's, else an error.
func (x *Experiment) SeedsOrDefault(seeds []int64) ([]int64, error) {
	if len(seeds) > 0 {
		return seeds, nil
	}
	if len(x.Seeds) > 0 {
		return x.Seeds, nil
	}
	return nil, fmt.Errorf("%s lists no seeds: pass --seeds 1,2,3", x.Name)
}

// RunName is <arm>-s<seed>, with the arm part shortened so that the name keeps the
// 40-character rule of AlignmentRun names.
func RunName(arm string, seed int64) string {
	suffix := fmt.Sprintf("-s%d", seed)
	keep := v1alpha1.MaxRunNameLength - len(suffix)
	if len(arm) > keep {
		arm = strings.TrimRight(arm[:keep], "-")
	}
	return arm + suffix
}

// Runs resolves and validates every (arm, seed) run, seeds outermost so that after the first
// seed every arm has one run. Errors name the arm (and run) and the field.
// cluster selects the API server's rules (a persistentVolumeClaim workspace) over the local ones;
// for the validation split it also adds `--split validation` to spec.evaluator.args, so that
// the cluster's eval pods score the validation prompts.
func (x *Experiment) Runs(arms []string, seeds []int64, split string, cluster bool) ([]ExperimentRun, error) {
	base := x.base
	if p, ok := x.SplitPatches[split]; ok {
		var err error
		if base, err = jsonpatch.MergePatch(base, p); err != nil {
			return nil, fmt.Errorf("splitPatches.%s: %v", split, err)
		}
	}
	byArm := map[string][]byte{}
	owner := map[string]string{}
	var errs []error
	for _, name := range arms {
		arm, ok := x.Arm(name)
		if !ok {
			return nil, fmt.Errorf("arm %q is not in the file", name)
		}
		doc := base
		if p := bytes.TrimSpace(arm.Patch); len(p) > 0 && string(p) != "null" {
			merged, err := jsonpatch.MergePatch(base, p)
			if err != nil {
				errs = append(errs, fmt.Errorf("arm %s: patch: %v", name, err))
				continue
			}
			doc = merged
		}
		byArm[name] = doc
		for _, s := range seeds {
			rn := RunName(name, s)
			if o, dup := owner[rn]; dup && o != name {
				errs = append(errs, fmt.Errorf("arms %s and %s both give run name %s (names are cut to %d characters): shorten one arm name",
					o, name, rn, v1alpha1.MaxRunNameLength))
			}
			owner[rn] = name
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var out []ExperimentRun
	failed := map[string]bool{}
	for _, s := range seeds {
		for _, name := range arms {
			if failed[name] {
				continue // the same error for every seed: report it once
			}
			r, err := x.resolve(name, s, byArm[name], split, cluster)
			if err != nil {
				errs = append(errs, err)
				failed[name] = true
				continue
			}
			out = append(out, r)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func (x *Experiment) resolve(arm string, seed int64, doc []byte, split string, cluster bool) (ExperimentRun, error) {
	name := RunName(arm, seed)
	fail := func(err error) (ExperimentRun, error) {
		return ExperimentRun{}, fmt.Errorf("arm %s (run %s): %w", arm, name, err)
	}
	set, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{
			"name": name,
			"labels": map[string]string{
				"alignment.bpo.dev/experiment": labelValue(x.Name),
				"alignment.bpo.dev/arm":        labelValue(arm),
				"alignment.bpo.dev/seed":       strconv.FormatInt(seed, 10),
			},
		},
		"spec": map[string]any{"seed": seed},
	})
	doc, err := jsonpatch.MergePatch(doc, set)
	if err != nil {
		return fail(err)
	}
	// Decode strictly into the typed object (unknown or misspelt fields are errors, YAML
	// numbers become the decimal strings the API wants), then write it back as clean YAML.
	var ar v1alpha1.AlignmentRun
	if err := yaml.UnmarshalStrict(doc, &ar); err != nil {
		return fail(fmt.Errorf("not a valid AlignmentRun: %v", err))
	}
	if ar.Kind == "" {
		ar.Kind = "AlignmentRun"
	}
	if ar.APIVersion == "" {
		ar.APIVersion = v1alpha1.GroupVersion.String()
	}
	if cluster && split == SplitValidation && !slices.Contains(ar.Spec.Evaluator.Args, "--split") {
		// The controller runs `bpo eval ...` followed by spec.evaluator.args.
		ar.Spec.Evaluator.Args = append(ar.Spec.Evaluator.Args, "--split", SplitValidation)
	}
	manifest, err := cleanManifest(&ar)
	if err != nil {
		return fail(err)
	}
	def, err := DecodeRun(manifest)
	if err != nil {
		return fail(err)
	}
	if cluster {
		if errs := def.Validate(); len(errs) > 0 {
			return fail(errs.ToAggregate())
		}
	}
	return ExperimentRun{Arm: arm, Seed: seed, Name: name, Manifest: manifest, AR: def}, nil
}

// cleanManifest renders an AlignmentRun as YAML without status and server-set fields.
func cleanManifest(ar *v1alpha1.AlignmentRun) ([]byte, error) {
	j, err := json.Marshal(ar)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	pruneEmpty(m)
	j, err = json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(j)
}

// pruneEmpty drops empty mappings (e.g. the stages' "resources: {}"), which mean the same as absent.
func pruneEmpty(m map[string]any) {
	for k, v := range m {
		if c, ok := v.(map[string]any); ok {
			pruneEmpty(c)
			if len(c) == 0 {
				delete(m, k)
			}
		}
	}
}

// labelValue makes s a valid label value (63 characters of [-._a-zA-Z0-9], alphanumeric ends).
func labelValue(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return strings.Trim(string(b), "-_.")
}

// Render is the multi-document YAML of the runs' manifests (for kubectl apply).
func Render(runs []ExperimentRun) []byte {
	var buf bytes.Buffer
	for i, r := range runs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		fmt.Fprintf(&buf, "# arm %s, seed %d\n", r.Arm, r.Seed)
		buf.Write(r.Manifest)
	}
	return buf.Bytes()
}
