package experiment

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"sigs.k8s.io/yaml"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/trainer/task"
)

// Run is one (arm, seed) run, resolved and validated.
type Run struct {
	Arm  string
	Seed int64
	Name string
	// Manifest is the AlignmentRun as written (not defaulted): what render prints and what
	// the run's workspace records as run.yaml.
	Manifest []byte
	// AR is the defaulted, validated AlignmentRun.
	AR *v1alpha1.AlignmentRun
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
// seed every arm has one run. An arm that lists its own seeds runs only those of seeds. Errors name the arm (and run) and the field.
// cluster selects the API server's rules (a persistentVolumeClaim workspace) over the local ones;
// for the validation split it also adds `--split validation` to spec.evaluator.args, so that
// the cluster's eval pods score the validation prompts.
func (x *Experiment) Runs(arms []string, seeds []int64, split string, cluster bool) ([]Run, error) {
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
		for _, s := range x.ArmSeeds(name, seeds) {
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
	var out []Run
	failed := map[string]bool{}
	tasks := builtinTasks{}
	for _, s := range seeds {
		for _, name := range arms {
			if failed[name] || !slices.Contains(x.ArmSeeds(name, seeds), s) {
				continue // the same error for every seed: report it once; or not one of the arm's seeds
			}
			r, err := x.resolve(name, s, byArm[name], split, cluster, tasks)
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

func (x *Experiment) resolve(arm string, seed int64, doc []byte, split string, cluster bool, tasks builtinTasks) (Run, error) {
	name := RunName(arm, seed)
	fail := func(err error) (Run, error) {
		return Run{}, fmt.Errorf("arm %s (run %s): %w", arm, name, err)
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
	def, err := pipeline.DecodeRun(manifest)
	if err != nil {
		return fail(err)
	}
	if cluster {
		if errs := def.Validate(); len(errs) > 0 {
			return fail(errs.ToAggregate())
		}
	}
	// A built-in task's splits are known now: a too-large evalPrompts should stop the grid
	// before any run starts, not fail every run at its first evaluation.
	if b := def.Spec.Data.Builtin; b != "" {
		t, err := tasks.get(b)
		if err != nil {
			return fail(fmt.Errorf("spec.data.builtin: %w", err))
		}
		if _, err := pipeline.EvalSplit(t, split, int(def.Spec.Budget.EvalPrompts)); err != nil {
			return fail(err)
		}
	}
	return Run{Arm: arm, Seed: seed, Name: name, Manifest: manifest, AR: def}, nil
}

// builtinTasks loads each built-in task once per Runs call (a load parses its data files, about
// 30 ms, and a grid resolves dozens of runs).
type builtinTasks map[string]*task.Task

func (c builtinTasks) get(name string) (*task.Task, error) {
	if t, ok := c[name]; ok {
		return t, nil
	}
	t, err := task.Builtin(name)
	if err != nil {
		return nil, err
	}
	c[name] = t
	return t, nil
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
func Render(runs []Run) []byte {
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
