package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// ManifestFile is the run's manifest kept in its workspace folder, so that a finished workspace
// says what produced it and `bpo report --workspace` can render its report with nothing else.
const ManifestFile = "run.yaml"

// RunManifest renders the run as the run.yaml a stage pod reads at /etc/bpo/run.yaml
// (apiVersion, kind, metadata name/uid, the defaulted spec): what an external stage command gets
// as --config.
func (r *Run) RunManifest() ([]byte, error) {
	return yaml.Marshal(map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(), "kind": "AlignmentRun",
		"metadata": map[string]any{"name": r.Name, "uid": r.UID},
		"spec":     r.Spec,
	})
}

// writeManifest keeps the run's (defaulted) manifest in the workspace folder, once: the first
// stage to open the workspace writes it, later ones leave it (every stage of a run reads the
// same spec).
func (e *Env) writeManifest() error {
	path := filepath.Join(e.WS.Root, ManifestFile)
	if _, err := os.Stat(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	data, err := e.Run.RunManifest()
	if err != nil {
		return fmt.Errorf("workspace manifest: %w", err)
	}
	return writeFileAtomic(path, data)
}

// OpenRunFolder opens a run's workspace folder (<volume>/<run name>) from its own manifest and
// owner file: what `bpo report --workspace` reads.
func OpenRunFolder(dir string) (*Env, error) {
	dir = filepath.Clean(dir)
	path := filepath.Join(dir, ManifestFile)
	ar, err := LoadRunFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s is missing: is %s a run's workspace folder (<volume>/<run name>, with owner.json)? Workspaces written before the manifest was kept need -f RUN.yaml", path, dir)
	}
	if err != nil {
		return nil, err
	}
	if ar.Name != filepath.Base(dir) {
		return nil, fmt.Errorf("%s names run %q but the folder is %q: pass the run's own folder", path, ar.Name, filepath.Base(dir))
	}
	var owner Owner
	if err := readJSON(filepath.Join(dir, ownerFile), &owner); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	ar.UID = "" // owner.json keeps the uid; OpenWorkspace accepts the folder's own
	run, err := NewRun(ar)
	if err != nil {
		return nil, err
	}
	run.UID = owner.UID
	return NewEnv(run, filepath.Dir(dir))
}
