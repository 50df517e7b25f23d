package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
	"github.com/bpo-dev/bpo/storage"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/task"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// Base is what every stage loads first: the base weights, the tokenizer, and the
// initial (SFT) adapter of every ensemble member.
type Base struct {
	Dir     string
	Weights *model.Weights
	Tok     tokenizer.Tokenizer
	Init    []*model.Adapter
}

// AdapterFile is where a model folder keeps the SFT adapter that initialises member m.
func AdapterFile(dir string, m int) string {
	return filepath.Join(dir, "adapters", fmt.Sprintf("member-%d.safetensors", m))
}

// BaseDir is the run's copy of its base model: a built-in model is materialised here
// so that the workspace records exactly what the run started from.
func (w *Workspace) BaseDir() string { return filepath.Join(w.Root, "base") }

// BaseInDir is the run's copy of a base model given by URI (spec.model.uri).
func (w *Workspace) BaseInDir() string { return filepath.Join(w.Root, "base-in") }

// FixedInDir is the run's copy of a fixed reference given by URI (spec.trustRegion.fixedCheckpoint).
func (w *Workspace) FixedInDir() string { return filepath.Join(w.Root, "reference-in") }

// fetchModel copies the checkpoint folder at uri (s3://, gs://) into dst once: dst/.complete,
// written last, marks the copy whole, so a stage killed mid-copy copies again. An s3:// uri is
// read with spec.workspace.objectStore's endpoint and region when the workspace is an s3://
// store (the same server), and always with the environment's credentials.
func (e *Env) fetchModel(field, uri, dst string) (string, error) {
	if _, err := os.Stat(filepath.Join(dst, completeFile)); err == nil {
		return dst, nil
	}
	var opts storage.Options
	if o := e.Run.Spec.Workspace.ObjectStore; o != nil && strings.HasPrefix(o.URI, "s3://") && strings.HasPrefix(uri, "s3://") {
		opts = storeOptions(o)
	}
	ctx := context.Background()
	st, err := storage.Open(ctx, uri, opts)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	defer st.Close()
	objs, err := st.List(ctx, "")
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	if len(objs) == 0 {
		return "", fmt.Errorf("%s: %s holds no files: it must name a checkpoint folder (config.json, model.safetensors, the tokenizer)", field, st)
	}
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = o.Key
	}
	if _, err := storage.Stage(ctx, st, "", dst, keys...); err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return dst, writeFileAtomic(filepath.Join(dst, completeFile), nil)
}

// imageModel is the folder of an oci:// model: the image volume the controller mounts in every
// stage pod. Only the kubelet can pull it, so the local runner (and a cluster without image
// volumes) finds no folder there and says so.
func (e *Env) imageModel(ref string) (string, error) {
	dir := e.ModelImageDir
	if dir == "" {
		dir = contract.ModelImageMountPath
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		return "", fmt.Errorf("spec.model.uri oci://%s: no model at %s (%v): the image is mounted there by the operator's stage pods as an image volume (Kubernetes >= 1.35, or the ImageVolume feature gate, and a container runtime that supports it); a local run needs spec.model.path or an s3:// or gs:// uri", ref, dir, err)
	}
	return dir, nil
}

// modelDir resolves spec.model to a folder, materialising a built-in model into the workspace.
func (e *Env) modelDir() (string, error) {
	spec := e.Run.Spec.Model
	if spec.Path != "" {
		return filepath.Join(e.VolumeRoot, spec.Path), nil
	}
	if ref := v1alpha1.ModelImage(spec.URI); ref != "" {
		return e.imageModel(ref)
	}
	if spec.URI != "" {
		return e.fetchModel("spec.model.uri", spec.URI, e.WS.BaseInDir())
	}
	dst := e.WS.BaseDir()
	if _, err := os.Stat(filepath.Join(dst, completeFile)); err == nil {
		return dst, nil
	}
	src, err := task.BuiltinModel(spec.Builtin)
	if err != nil {
		return "", fmt.Errorf("spec.model.builtin: %w", err)
	}
	err = fs.WalkDir(src, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".md") {
			return err
		}
		data, err := fs.ReadFile(src, p)
		if err != nil {
			return err
		}
		return writeFileAtomic(filepath.Join(dst, p), data)
	})
	if err != nil {
		return "", fmt.Errorf("materialise built-in model %s: %w", spec.Builtin, err)
	}
	return dst, writeFileAtomic(filepath.Join(dst, completeFile), nil)
}

// LoadBase loads the base model, its tokenizer and the members' initial adapters.
// A model folder without adapters/ starts every member from a fresh adapter (B = 0,
// A seeded by the member index), so the ensemble starts exactly at the base model.
func (e *Env) LoadBase() (*Base, error) {
	if e.base != nil {
		return e.base, nil
	}
	dir, err := e.modelDir()
	if err != nil {
		return nil, err
	}
	w, err := model.LoadWeights(dir)
	if err != nil {
		return nil, fmt.Errorf("spec.model: %w", err)
	}
	tok, err := e.tokenizer(dir)
	if err != nil {
		return nil, err
	}
	if tok.VocabSize() > w.Config.VocabSize {
		return nil, fmt.Errorf("spec.model: tokenizer has %d tokens but the model's vocab_size is %d", tok.VocabSize(), w.Config.VocabSize)
	}
	ens := e.Run.Spec.Ensemble
	b := &Base{Dir: dir, Weights: w, Tok: tok}
	for m := 0; m < e.Run.Members(); m++ {
		path := AdapterFile(dir, m)
		a, err := model.LoadAdapterFor(path, w.Config)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if _, statErr := os.Stat(filepath.Join(dir, "adapters")); statErr == nil {
				return nil, fmt.Errorf("spec.ensemble.members is %d but %s has no %s: lower members or add SFT adapters", e.Run.Members(), dir, filepath.Base(path))
			}
			a = model.NewAdapter(w.Config, int(ens.Rank), float64(ens.Alpha), int64(e.Run.Seed)*1000+int64(m))
		case err != nil:
			return nil, err
		case a.Rank != int(ens.Rank) || a.Alpha != float64(ens.Alpha):
			return nil, fmt.Errorf("spec.ensemble: the model's SFT adapters have rank %d and alpha %g, the spec asks for rank %d and alpha %d: set spec.ensemble.rank/alpha to match",
				a.Rank, a.Alpha, ens.Rank, ens.Alpha)
		}
		b.Init = append(b.Init, a)
	}
	e.base = b
	return b, nil
}

func (e *Env) tokenizer(dir string) (tokenizer.Tokenizer, error) {
	switch e.Run.Spec.Model.Tokenizer {
	case v1alpha1.TokenizerByte:
		return tokenizer.Byte{}, nil
	case v1alpha1.TokenizerGPT2BPE:
		return tokenizer.LoadBPE(filepath.Join(dir, tokenizer.VocabFile), filepath.Join(dir, tokenizer.MergesFile))
	default:
		return tokenizer.FromDir(dir)
	}
}
