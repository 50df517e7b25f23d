// Package pipeline owns the workspace contract and the stage functions (sample,
// label, train, eval) built from trainer/. `bpo <stage>` runs one of them per pod;
// `bpo run` loops over the same functions in one process.
package pipeline

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/bpo-dev/bpo/internal/fsutil"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Workspace is the folder tree of one run (see docs/design.md, "Workspace layout").
type Workspace struct {
	// Root is <workspace>/<run-name>.
	Root string
}

// Owner identifies the run that owns a workspace.
type Owner struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

const ownerFile = "owner.json"

// OpenWorkspace creates <base>/<name> if missing and claims it for owner; it
// refuses a workspace already claimed by a different uid, so that two runs that
// share a volume can never overwrite each other's data.
func OpenWorkspace(base string, owner Owner) (*Workspace, error) {
	if owner.Name == "" {
		return nil, errors.New("workspace: run name is empty")
	}
	root := filepath.Join(base, owner.Name)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("workspace: create %s: %w", root, err)
	}
	path := filepath.Join(root, ownerFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := writeJSONAtomic(path, owner); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("workspace: read %s: %w", path, err)
	default:
		if err := checkOwner(root, data, owner); err != nil {
			return nil, err
		}
	}
	sweepTemps(root, staleTemp)
	return &Workspace{Root: root}, nil
}

// checkOwner checks that owner.json's content (of the run folder named where) is owner's claim.
func checkOwner(where string, data []byte, owner Owner) error {
	var have Owner
	if err := json.Unmarshal(data, &have); err != nil {
		return fmt.Errorf("workspace: %s/%s is corrupt (%v); it marks which run owns the folder, fix or remove it by hand", where, ownerFile, err)
	}
	if have.Name != owner.Name || (have.UID != "" && owner.UID != "" && have.UID != owner.UID) {
		return fmt.Errorf("workspace: %s belongs to run %q (uid %s), not %q (uid %s); use another workspace subPath or delete the old run's folder",
			where, have.Name, have.UID, owner.Name, owner.UID)
	}
	return nil
}

// staleTemp is the age after which a temp file of an atomic write is litter: a write takes
// seconds, so an hour-old one belongs to a stage that was killed mid-write.
const staleTemp = time.Hour

// sweepTemps removes the temp files of atomic writes (".<name>.tmp-*") under root older than age.
// Younger ones may belong to a stage writing right now, on another pod.
func sweepTemps(root string, age time.Duration) {
	cutoff := time.Now().Add(-age)
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasPrefix(d.Name(), ".") || !strings.Contains(d.Name(), ".tmp-") {
			return nil
		}
		if info, err := d.Info(); err == nil && info.ModTime().Before(cutoff) {
			_ = os.Remove(path)
		}
		return nil
	})
}

// PhaseDir is <root>/phase-<k>.
func (w *Workspace) PhaseDir(k int) string { return filepath.Join(w.Root, fmt.Sprintf("phase-%d", k)) }

// BehaviorDir holds the merged behavior model that samples phase k.
func (w *Workspace) BehaviorDir(k int) string { return filepath.Join(w.PhaseDir(k), "behavior") }

// BehaviorAdapterDir holds the same behavior model as one PEFT LoRA adapter over the base model.
func (w *Workspace) BehaviorAdapterDir(k int) string {
	return filepath.Join(w.PhaseDir(k), "behavior-adapter")
}

// ReferenceDir holds the reference model of phase k when it is not the behavior model.
func (w *Workspace) ReferenceDir(k int) string { return filepath.Join(w.PhaseDir(k), "reference") }

// SamplesPath is shard i's sampled prompts with two (or more) responses each.
func (w *Workspace) SamplesPath(k, shard int) string {
	return filepath.Join(w.PhaseDir(k), "samples", fmt.Sprintf("shard-%d.jsonl", shard))
}

// PairsPath is shard i's labelled preference pairs.
func (w *Workspace) PairsPath(k, shard int) string {
	return filepath.Join(w.PhaseDir(k), "pairs", fmt.Sprintf("shard-%d.jsonl", shard))
}

// MemberDir holds ensemble member m's adapter and optimizer state after phase k.
func (w *Workspace) MemberDir(k, m int) string {
	return filepath.Join(w.PhaseDir(k), "members", fmt.Sprintf("member-%d", m))
}

// EvalDir holds phase k's evaluation.
func (w *Workspace) EvalDir(k int) string { return filepath.Join(w.PhaseDir(k), "eval") }

// DonePath is the marker whose presence makes a stage a no-op.
func (w *Workspace) DonePath(k int, stage string, index int) string {
	name := stage
	if index >= 0 {
		name = fmt.Sprintf("%s-%d", stage, index)
	}
	return filepath.Join(w.PhaseDir(k), name+".done.json")
}

// Rel returns path relative to the workspace root, for results that the controller shows.
func (w *Workspace) Rel(path string) string {
	if r, err := filepath.Rel(filepath.Dir(w.Root), path); err == nil {
		return r
	}
	return path
}

// The workspace's files are written atomically and read back with the path in errors: the one
// copy is internal/fsutil.
var (
	writeFileAtomic = fsutil.WriteFile
	writeJSONAtomic = fsutil.WriteJSON
	readJSON        = fsutil.ReadJSON
	jsonBytes       = fsutil.MarshalJSON
)

// WriteJSONL writes one JSON document per line, atomically.
func WriteJSONL[T any](path string, rows []T) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return writeFileAtomic(path, buf.Bytes())
}

// ReadJSONL reads one JSON document per line; a bad line is reported as file:line.
// Unknown fields are rejected so that a typo in a hand-written file is not silently ignored.
func ReadJSONL[T any](path string) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return decodeJSONL[T](f, path)
}

func decodeJSONL[T any](r io.Reader, name string) ([]T, error) {
	var out []T
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		// One JSON object per line: "null" would decode to a zero row and anything after the
		// first value would be dropped silently.
		if text[0] != '{' {
			return nil, fmt.Errorf("%s:%d: not a JSON object", name, line)
		}
		var v T
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, line, err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, fmt.Errorf("%s:%d: trailing data after the JSON object", name, line)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %v", name, line+1, err)
	}
	return out, nil
}
