package pipeline

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/storage"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// Models out by URI (spec.output, docs/storage.md "Models out"). The export stage writes the
// policy after phase k (the ensemble's mean merged into the base, dense, with the base model's
// tokenizer files) and the same policy as one PEFT LoRA adapter over the base model into a temp
// folder, then publishes them under <uri>/<run>/ (the last phase) or <uri>/<run>/phase-<k>/
// (an earlier one, spec.output.everyPhase): policy/ and adapter/, each with a .complete object
// uploaded after every other object of the export, so a reader that finds it finds both folders
// whole. The temp folder is outside the workspace: the models are not workspace files (an
// object-store workspace would otherwise upload them twice).

// Folders of an export and the marker that completes each.
const (
	ExportPolicyDir  = "policy"
	ExportAdapterDir = "adapter"
	exportMarker     = completeFile
)

// tokenizerFiles are the files of a Hugging Face model folder that make up its tokenizer; the
// export copies those the base model has.
var tokenizerFiles = []string{
	tokenizer.ConfigFile, tokenizer.VocabFile, tokenizer.MergesFile,
	"tokenizer.json", "special_tokens_map.json", "added_tokens.json", "generation_config.json",
}

// exportMark is the content of an export's .complete objects: whose export it is.
type exportMark struct {
	Run   string `json:"run"`
	UID   string `json:"uid,omitempty"`
	Phase int    `json:"phase"`
}

// Export is the export stage of phase k: it exports the policy after phase k and the ensemble's
// adapter to spec.output (see above). Its result carries the URIs, never credentials.
func (e *Env) Export(ctx context.Context, k int) (v1alpha1.StageResult, error) {
	o := e.Run.Spec.Output
	if o == nil {
		return v1alpha1.StageResult{}, errors.New("spec.output is not set: the export stage has nowhere to write; set spec.output.uri")
	}
	return e.once(k, v1alpha1.StageExport, -1, func(r *v1alpha1.StageResult) error {
		out, err := OpenOutput(ctx, o, os.Getenv)
		if err != nil {
			return err
		}
		defer out.Close()
		prefix := e.Run.Name
		if k != e.Run.Phases() {
			prefix += fmt.Sprintf("/phase-%d", k)
		}
		dst, err := out.Sub(prefix)
		if err != nil {
			return fmt.Errorf("spec.output: %w", err)
		}
		local, err := os.MkdirTemp("", "bpo-export-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(local)
		if err := e.writeExport(k, local); err != nil {
			return err
		}
		st, err := publishExport(ctx, dst, local, exportMark{Run: e.Run.Name, UID: e.Run.UID, Phase: k})
		if err != nil {
			return fmt.Errorf("spec.output: %w", err)
		}
		r.Outputs = &v1alpha1.RunOutputs{
			Policy:  dst.String() + "/" + ExportPolicyDir,
			Adapter: dst.String() + "/" + ExportAdapterDir,
		}
		r.Message = fmt.Sprintf("exported the policy after phase %d to %s (%d objects, %d bytes)", k, dst, st.Objects, st.Bytes)
		return nil
	})
}

// OpenOutput opens and pings spec.output. The credentials are BPO_OUTPUT_ACCESS_KEY_ID and
// BPO_OUTPUT_SECRET_ACCESS_KEY when set (the export pod gets them from spec.output.secretRef),
// else the standard chain (AWS_* variables, IRSA; gs:// Application Default Credentials).
func OpenOutput(ctx context.Context, o *v1alpha1.OutputSpec, getenv func(string) string) (*storage.Store, error) {
	id, secret := getenv(v1alpha1.EnvOutputAccessKeyID), getenv(v1alpha1.EnvOutputSecretAccessKey)
	if (id == "") != (secret == "") {
		return nil, fmt.Errorf("spec.output: set both %s and %s, or neither (spec.output.secretRef sets both)",
			v1alpha1.EnvOutputAccessKeyID, v1alpha1.EnvOutputSecretAccessKey)
	}
	return openPinged(ctx, "spec.output", o.URI, storage.Options{
		Endpoint: o.Endpoint, Region: o.Region, PathStyle: o.Endpoint != "",
		AccessKeyID: id, SecretAccessKey: secret,
	})
}

// writeExport writes the policy after phase k into dir/policy (config.json, model.safetensors,
// the base model's tokenizer files) and the ensemble as one PEFT adapter into dir/adapter.
func (e *Env) writeExport(k int, dir string) error {
	b, err := e.LoadBase()
	if err != nil {
		return err
	}
	ms, err := e.Members(k)
	if err != nil {
		return err
	}
	policy := filepath.Join(dir, ExportPolicyDir)
	if err := model.SaveWeights(policy, model.MergeMean(b.Weights, ms)); err != nil {
		return err
	}
	if err := e.copyTokenizer(b.Dir, policy); err != nil {
		return err
	}
	return e.saveEnsembleAdapter(filepath.Join(dir, ExportAdapterDir), ms)
}

// copyTokenizer copies the tokenizer files of the base model folder src into dst. When
// spec.model.tokenizer names the tokenizer (rather than auto), dst's tokenizer_config.json
// records its class, so that the exported folder loads with the tokenizer the run used.
func (e *Env) copyTokenizer(src, dst string) error {
	for _, name := range tokenizerFiles {
		data, err := os.ReadFile(filepath.Join(src, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(dst, name), data); err != nil {
			return err
		}
	}
	class := map[v1alpha1.TokenizerType]string{v1alpha1.TokenizerByte: "byte", v1alpha1.TokenizerGPT2BPE: "GPT2Tokenizer"}[e.Run.Spec.Model.Tokenizer]
	if class == "" {
		return nil
	}
	path := filepath.Join(dst, tokenizer.ConfigFile)
	cfg := map[string]any{}
	if data, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(data, &cfg); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	cfg["tokenizer_class"] = class
	return writeJSONAtomic(path, cfg)
}

// saveEnsembleAdapter writes the members' mean as one PEFT LoRA adapter (model.EnsembleAdapter:
// base + adapter is exactly the merged policy) into dir.
func (e *Env) saveEnsembleAdapter(dir string, ms []*model.Adapter) error {
	b, err := e.LoadBase()
	if err != nil {
		return err
	}
	a, err := model.EnsembleAdapter(ms)
	if err != nil {
		return err
	}
	m := e.Run.Spec.Model
	base := cmp.Or(m.Builtin, m.Path, m.URI) // base_model_name_or_path: informative
	return model.SavePEFT(dir, a, b.Weights.Config, base)
}

// publishExport uploads the export in local (policy/, adapter/) to dst: it first deletes the
// markers of an earlier export there (whose objects are about to be replaced), then uploads
// every object, then policy/.complete and adapter/.complete. A failed or killed export leaves
// no marker; its retry uploads everything again.
func publishExport(ctx context.Context, dst *storage.Store, local string, mark exportMark) (storage.Stats, error) {
	data, err := json.Marshal(mark)
	if err != nil {
		return storage.Stats{}, err
	}
	dirs := []string{ExportPolicyDir, ExportAdapterDir}
	for _, d := range dirs {
		if err := dst.Delete(ctx, d+"/"+exportMarker); err != nil {
			return storage.Stats{}, err
		}
	}
	var sum storage.Stats
	for i, d := range dirs {
		marker := d + "/" + exportMarker
		if err := writeFileAtomic(filepath.Join(local, d, exportMarker), data); err != nil {
			return sum, err
		}
		var files []string
		if i == 0 {
			files = []string{ExportPolicyDir + "/", ExportAdapterDir + "/"} // every data object, before any marker
		}
		st, err := storage.Publish(ctx, dst, local, "", files, marker)
		sum.Objects, sum.Bytes = sum.Objects+st.Objects, sum.Bytes+st.Bytes
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}
