package storage

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
)

// Stats counts what Stage or Publish moved.
type Stats struct {
	Objects int
	Bytes   int64
}

// transfers is how many objects Stage and Publish move at once: enough to hide a round
// trip's latency behind others, few enough for a small pod.
const transfers = 4

// Stage downloads a stage's inputs from store into localDir (a pod's emptyDir): each input
// names an object under prefix, or a folder when it ends in "/" (every object below it),
// and lands at localDir/<input>. A missing input, or an empty folder, is an error matching
// ErrNotExist that names it. Each local file appears whole (temp file + rename), so a
// stage retried in the same emptyDir never reads a torn input.
func Stage(ctx context.Context, store *Store, prefix, localDir string, inputs ...string) (Stats, error) {
	src, err := store.Sub(prefix)
	if err != nil {
		return Stats{}, fmt.Errorf("storage: Stage prefix: %w", err)
	}
	if localDir == "" {
		return Stats{}, fmt.Errorf("storage: Stage localDir is empty: name the folder to stage into")
	}
	var keys []string
	for _, in := range inputs {
		if folder, ok := strings.CutSuffix(in, "/"); ok {
			objs, err := src.List(ctx, folder)
			if err != nil {
				return Stats{}, err
			}
			if len(objs) == 0 {
				return Stats{}, &opError{msg: fmt.Sprintf("storage: stage %s/: no objects (the stage that writes it has not published)", src.where(folder)), kind: []error{ErrNotExist}}
			}
			for _, o := range objs {
				// Someone else may have written the bucket: a key like "x/../../y" must not
				// reach a path outside localDir.
				if err := checkKey("storage: Stage: object key", o.Key); err != nil {
					return Stats{}, fmt.Errorf("%w (in %s; remove or rename that object)", err, src.where(folder))
				}
				keys = append(keys, o.Key)
			}
			continue
		}
		if err := checkKey("storage: Stage input", in); err != nil {
			return Stats{}, err
		}
		keys = append(keys, in)
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)

	var st Stats
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(transfers)
	for _, k := range keys {
		g.Go(func() error {
			n, err := download(gctx, src, k, filepath.Join(localDir, filepath.FromSlash(k)))
			if err != nil {
				return err
			}
			mu.Lock()
			st.Objects++
			st.Bytes += n
			mu.Unlock()
			return nil
		})
	}
	return st, g.Wait()
}

// download copies one object to path through a temp file in the same folder.
func download(ctx context.Context, s *Store, key, path string) (int64, error) {
	r, err := s.NewReader(ctx, key)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, fmt.Errorf("storage: stage %s: %w", s.where(key), err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("storage: stage %s: %w", s.where(key), err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return n, fmt.Errorf("storage: stage %s into %s: %w", s.where(key), path, err)
	}
	return n, nil
}

// Publish uploads a stage's outputs from localDir to store under prefix, each file to
// prefix/<file>; a file ending in "/" is a folder (every file below it). The marker (a file
// in localDir, e.g. "phase-1/sample-0.done.json") is uploaded last, only after every data
// object was written whole, so a reader that finds the marker finds the complete result.
//
// Publish is idempotent: run again after a failure or a kill, it rewrites every object.
// Objects of an interrupted Publish may be there without their marker, which is how a reader
// knows they are not a result; the retry overwrites them.
func Publish(ctx context.Context, store *Store, localDir, prefix string, files []string, marker string) (Stats, error) {
	dst, err := store.Sub(prefix)
	if err != nil {
		return Stats{}, fmt.Errorf("storage: Publish prefix: %w", err)
	}
	if err := checkKey("storage: Publish marker", marker); err != nil {
		return Stats{}, err
	}
	if localDir == "" {
		return Stats{}, fmt.Errorf("storage: Publish localDir is empty: name the folder that holds the outputs")
	}
	if _, err := os.Stat(filepath.Join(localDir, filepath.FromSlash(marker))); err != nil {
		return Stats{}, fmt.Errorf("storage: Publish marker: %w (write the marker into localDir before publishing)", err)
	}
	keys, err := localFiles(localDir, files)
	if err != nil {
		return Stats{}, err
	}
	keys = slices.DeleteFunc(keys, func(k string) bool { return k == marker })

	var st Stats
	var mu sync.Mutex
	put := func(ctx context.Context, key string) error {
		f, err := os.Open(filepath.Join(localDir, filepath.FromSlash(key)))
		if err != nil {
			return fmt.Errorf("storage: publish %s: %w", key, err)
		}
		defer f.Close()
		n, err := dst.WriteFrom(ctx, key, f)
		if err != nil {
			return err
		}
		mu.Lock()
		st.Objects++
		st.Bytes += n
		mu.Unlock()
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(transfers)
	for _, k := range keys {
		g.Go(func() error { return put(gctx, k) })
	}
	if err := g.Wait(); err != nil {
		return st, err
	}
	// Every data write has returned success: on S3 and GCS (strongly consistent) and on a
	// folder, each object is now whole and visible to every reader, so the marker may follow.
	return st, put(ctx, marker)
}

// localFiles expands files (relative to dir; "x/" = every file under dir/x) into sorted,
// distinct slash-separated keys.
func localFiles(dir string, files []string) ([]string, error) {
	var keys []string
	for _, f := range files {
		folder, isFolder := strings.CutSuffix(f, "/")
		if !isFolder {
			if err := checkKey("storage: Publish file", f); err != nil {
				return nil, err
			}
			keys = append(keys, f)
			continue
		}
		if err := checkKey("storage: Publish folder", folder); err != nil {
			return nil, err
		}
		root := filepath.Join(dir, filepath.FromSlash(folder))
		n := len(keys)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || isTempName(d.Name()) {
				return nil
			}
			rel, err := filepath.Rel(dir, path)
			if err != nil {
				return err
			}
			keys = append(keys, filepath.ToSlash(rel))
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("storage: Publish folder %q: %w", f, err)
		}
		if len(keys) == n {
			return nil, fmt.Errorf("storage: Publish folder %q holds no files: the stage wrote no output there", f)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}
