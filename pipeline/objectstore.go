package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/storage"
)

// A workspace in an object store (spec.workspace.objectStore, docs/storage.md). The stage
// functions keep running on a local folder laid out like the workspace; only the edges talk to
// the bucket: a stage stages what it reads into the folder, runs, and publishes what it wrote,
// data objects first and done markers last, so a reader that finds a marker finds the whole
// result. owner.json and the shard plans are the create-only writes.

// OpenObjectStore opens and pings spec.workspace.objectStore. Credentials come from the
// standard environment only (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, which a stage pod gets
// from the secretRef; IRSA; gs:// Application Default Credentials), never from the spec.
func OpenObjectStore(ctx context.Context, o *v1alpha1.WorkspaceObjectStore) (*storage.Store, error) {
	return openPinged(ctx, "spec.workspace.objectStore", o.URI, storeOptions(o))
}

// openPinged opens the store at uri and pings it (Open does not contact the server, so a wrong
// endpoint or credential would otherwise show only on the first read); errors name field.
func openPinged(ctx context.Context, field, uri string, opts storage.Options) (*storage.Store, error) {
	st, err := storage.Open(ctx, uri, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if err := st.Ping(ctx); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return st, nil
}

// storeOptions are the storage options of an object-store spec: an endpoint means an
// S3-compatible server, addressed path-style.
func storeOptions(o *v1alpha1.WorkspaceObjectStore) storage.Options {
	if o == nil {
		return storage.Options{}
	}
	return storage.Options{Endpoint: o.Endpoint, Region: o.Region, PathStyle: o.Endpoint != ""}
}

// claimOwner claims the run's folder in the store with a create-only write of owner.json, or
// checks the existing claim, as OpenWorkspace does on a volume.
func claimOwner(ctx context.Context, run *storage.Store, owner Owner) error {
	data, err := jsonBytes(owner)
	if err != nil {
		return err
	}
	err = run.Create(ctx, ownerFile, data)
	if err == nil {
		return nil
	}
	if !errors.Is(err, storage.ErrExist) {
		return fmt.Errorf("workspace: claim %s: %w", run, err)
	}
	have, err := run.Read(ctx, ownerFile)
	if err != nil {
		return fmt.Errorf("workspace: %w", err)
	}
	// A server that ignores If-None-Match lets both writers "win": comparing the uid (not the
	// bytes) is what makes the claim hold there too (docs/storage.md).
	return checkOwner(run.String(), have, owner)
}

// stageNeeds reports whether a stage of phase k reads the workspace file key (relative to the
// run's folder). Everything is staged except the model snapshots the stage does not load: the
// dense behavior snapshots and their adapters (written by sample, read by nobody in the loop;
// sample recomputes its own from the members), the EMA reference but the one the sample stage
// of phase k starts from, and the members' weights and optimizer state but those of phases k-1
// and k (what Policy and the pair diagnostics of phase k load). The small files of every phase
// (markers, plans, samples, pairs, evaluations, annotations) are staged: the report and the
// annotation accounting read them all. docs/storage.md gives the cost.
func stageNeeds(stage string, k int, key string) bool {
	rest, ok := strings.CutPrefix(key, "phase-")
	if !ok {
		return true
	}
	num, rest, ok := strings.Cut(rest, "/")
	j, err := strconv.Atoi(num)
	if !ok || err != nil {
		return true
	}
	dir, _, _ := strings.Cut(rest, "/")
	switch dir {
	case "behavior", "behavior-adapter":
		return false
	case "reference":
		return stage == v1alpha1.StageSample && j == k-1
	case "members":
		return !strings.HasSuffix(key, ".safetensors") || j == k-1 || j == k
	}
	return true
}

// Output kinds of a stage's written files, in the order they are published.
const (
	outputClaim  = iota // create-only: the shard plans
	outputData          // every data object
	outputMarker        // done markers (and a staged model's .complete), last
	outputSkip          // owner.json: claimed before the stage ran
)

// outputKind sorts a written file (relative to the run's folder) into its publish step.
func outputKind(key string) int {
	name := key[strings.LastIndexByte(key, '/')+1:]
	switch {
	case key == ownerFile:
		return outputSkip
	case strings.HasSuffix(name, "-shards.json") && strings.HasPrefix(key, "phase-") && strings.Count(key, "/") == 1:
		return outputClaim
	case strings.HasSuffix(name, ".done.json") || name == completeFile:
		return outputMarker
	}
	return outputData
}

// completeFile marks a model folder copied whole into the workspace (a built-in or a URI).
const completeFile = ".complete"

// stamp is what tells a file the stage wrote from one it staged.
type stamp struct {
	size int64
	mod  time.Time
}

// snapshot records every file under root (keys relative to it), skipping temp files.
func snapshot(root string) (map[string]stamp, error) {
	out := map[string]stamp{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path == root {
				return nil
			}
			return err
		}
		if d.IsDir() || storage.IsTemp(d.Name()) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = stamp{info.Size(), info.ModTime()}
		return nil
	})
	return out, err
}

// written lists the files of now that are not in before, or changed since.
func written(before, now map[string]stamp) []string {
	var out []string
	for k, s := range now {
		if b, ok := before[k]; !ok || b != s {
			out = append(out, k)
		}
	}
	return out
}

// publishWritten publishes the files a stage wrote under local (the run's folder) to run: the
// shard plans create-only (an existing plan must hold the same count, or this pod ran with
// another parallelism than the one that won and must not publish), then the data, then the
// markers. Nothing is published when a claim fails, and no marker when any data write fails.
func publishWritten(ctx context.Context, run *storage.Store, local string, files []string) (storage.Stats, error) {
	var claims, data, markers []string
	for _, f := range files {
		switch outputKind(f) {
		case outputClaim:
			claims = append(claims, f)
		case outputData:
			data = append(data, f)
		case outputMarker:
			markers = append(markers, f)
		}
	}
	for _, c := range claims {
		mine, err := os.ReadFile(filepath.Join(local, filepath.FromSlash(c)))
		if err != nil {
			return storage.Stats{}, err
		}
		err = run.Create(ctx, c, mine)
		if errors.Is(err, storage.ErrExist) {
			have, rerr := run.Read(ctx, c)
			if rerr != nil {
				return storage.Stats{}, rerr
			}
			if !bytes.Equal(bytes.TrimSpace(have), bytes.TrimSpace(mine)) {
				return storage.Stats{}, fmt.Errorf("%s/%s records another shard count (%s) than this stage ran with (%s): a stage of another parallelism published first; the stage's next attempt uses the recorded count",
					run, c, bytes.TrimSpace(have), bytes.TrimSpace(mine))
			}
			err = nil
		}
		if err != nil {
			return storage.Stats{}, err
		}
	}
	if len(markers) == 0 {
		if len(data) == 0 {
			return storage.Stats{}, nil
		}
		// No marker (nothing waits on these files): the last data file goes last, harmlessly.
		data, markers = data[:len(data)-1], data[len(data)-1:]
	}
	sum, err := storage.Publish(ctx, run, local, "", data, markers[0])
	if err != nil {
		return sum, err
	}
	for _, m := range markers[1:] {
		st, err := storage.Publish(ctx, run, local, "", nil, m)
		sum.Objects, sum.Bytes = sum.Objects+st.Objects, sum.Bytes+st.Bytes
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}
