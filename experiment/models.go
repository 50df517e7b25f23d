package experiment

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/task"
)

// An ensemble's initial model is the base plus the mean of its members' SFT adapters, so a
// 1-member run (base + adapter 0) starts from a different model than a 3-member run (base + the
// mean of adapters 0..2), and an ensemble-vs-single-adapter comparison would mix the ensemble's
// effect with the starting point's. A stacked adapter removes that: adapters 0..N-1 concatenated
// along the rank (A' = [A_0 … A_{N-1}], B' = [B_0; …; B_{N-1}], rank N·r, the same alpha) give
// (alpha/(N·r))·A'·B' = (1/N)·Σ (alpha/r)·A_m·B_m: exactly the N-member ensemble's initial model,
// in one adapter with the ensemble's total rank.

// DerivedModel is a model folder the grid runner writes into DIR/runs/models/<name> before any
// run; an arm uses it with spec.model.path: models/<name>.
type DerivedModel struct {
	Name string `json:"name"`
	// Builtin is the built-in model it is made from.
	Builtin string `json:"builtin"`
	// StackAdapters N makes the folder's only adapter (member-0) the stack of the built-in
	// model's adapters 0..N-1 (rank N·r, same alpha): its merge is the N-member ensemble's
	// initial model. Runs on it set ensemble {members: 1, rank: N·r, alpha: the same}.
	StackAdapters int `json:"stackAdapters"`
}

// ModelsDir is where derived models go, relative to the workspace volume (DIR/runs).
const ModelsDir = "models"

func (d DerivedModel) check() error {
	switch {
	case !armNameRE.MatchString(d.Name):
		return fmt.Errorf("models: name %q must be lower-case letters, digits and '-' (it names the folder %s/<name>)", d.Name, ModelsDir)
	case d.Builtin == "":
		return fmt.Errorf("models.%s: builtin: name the built-in model it is made from, e.g. small-reviews", d.Name)
	case d.StackAdapters < 2:
		return fmt.Errorf("models.%s: stackAdapters: %d, want the number of SFT adapters to stack (>= 2)", d.Name, d.StackAdapters)
	}
	return nil
}

// prepareModels writes the file's derived models into the volume (once: a finished folder has
// a .complete marker and is left alone).
func prepareModels(x *Experiment, volume string) error {
	for _, d := range x.Models {
		if err := prepareModel(d, filepath.Join(volume, ModelsDir, d.Name)); err != nil {
			return fmt.Errorf("models.%s: %w", d.Name, err)
		}
	}
	return nil
}

func prepareModel(d DerivedModel, dst string) error {
	done := filepath.Join(dst, ".complete")
	if _, err := os.Stat(done); err == nil {
		return nil
	}
	src, err := task.BuiltinModel(d.Builtin)
	if err != nil {
		return err
	}
	// Everything but the adapters and the docs, as the stages materialise a built-in model.
	err = fs.WalkDir(src, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || strings.HasSuffix(p, ".md") || strings.HasPrefix(p, "adapters/") {
			return err
		}
		data, err := fs.ReadFile(src, p)
		if err != nil {
			return err
		}
		return writeFileAtomic(filepath.Join(dst, p), data)
	})
	if err != nil {
		return err
	}
	cfg, err := model.ReadConfig(filepath.Join(dst, "config.json"))
	if err != nil {
		return err
	}
	var members []*model.Adapter
	for m := range d.StackAdapters {
		name := filepath.ToSlash(filepath.Join("adapters", filepath.Base(pipeline.AdapterFile("", m))))
		data, err := fs.ReadFile(src, name)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("built-in model %s has no %s: stackAdapters is at most its number of adapters", d.Builtin, name)
		} else if err != nil {
			return err
		}
		tmp := filepath.Join(dst, ".stack-input.safetensors")
		if err := writeFileAtomic(tmp, data); err != nil {
			return err
		}
		a, err := model.LoadAdapterFor(tmp, cfg)
		os.Remove(tmp)
		if err != nil {
			return err
		}
		members = append(members, a)
	}
	stacked, err := StackAdapters(members)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(pipeline.AdapterFile(dst, 0)), 0o755); err != nil {
		return err
	}
	if err := model.SaveAdapter(pipeline.AdapterFile(dst, 0), stacked); err != nil {
		return err
	}
	return writeFileAtomic(done, nil)
}

// StackAdapters concatenates LoRA adapters of one rank and alpha along the rank: the result's
// merge equals the mean merge of the inputs (model.MergeMean), exactly.
func StackAdapters(as []*model.Adapter) (*model.Adapter, error) {
	if len(as) == 0 {
		return nil, errors.New("stack adapters: none given")
	}
	r, alpha := as[0].Rank, as[0].Alpha
	out := &model.Adapter{Rank: r * len(as), Alpha: alpha, Tensors: map[string]*model.Tensor{}}
	for i, a := range as {
		if a.Rank != r || a.Alpha != alpha || len(a.Tensors) != len(as[0].Tensors) {
			return nil, fmt.Errorf("stack adapters: adapter %d has rank %d alpha %g and %d tensors, adapter 0 rank %d alpha %g and %d", i, a.Rank, a.Alpha, len(a.Tensors), r, alpha, len(as[0].Tensors))
		}
		for name, t := range as[0].Tensors {
			if u, ok := a.Tensors[name]; !ok || len(u.Data) != len(t.Data) {
				return nil, fmt.Errorf("stack adapters: adapter %d has no tensor %s of adapter 0's shape", i, name)
			}
		}
	}
	R := out.Rank
	for name, t0 := range as[0].Tensors {
		switch {
		case strings.HasSuffix(name, ".lora_A"): // (in, r) -> (in, N·r): the members side by side
			in := t0.Shape[0]
			t := model.NewTensor(in, R)
			for m, a := range as {
				src := a.Tensors[name]
				for i := range in {
					copy(t.Data[i*R+m*r:i*R+(m+1)*r], src.Data[i*r:(i+1)*r])
				}
			}
			out.Tensors[name] = t
		case strings.HasSuffix(name, ".lora_B"): // (r, out) -> (N·r, out): the members one under another
			cols := t0.Shape[1]
			t := model.NewTensor(R, cols)
			for m, a := range as {
				copy(t.Data[m*r*cols:(m+1)*r*cols], a.Tensors[name].Data)
			}
			out.Tensors[name] = t
		default:
			return nil, fmt.Errorf("stack adapters: tensor %s is neither lora_A nor lora_B", name)
		}
	}
	return out, out.ValidateShape()
}
