// Package fsutil holds the one copy of the file writing and reading every package that keeps
// results on disk shares (the workspace, experiment folders, model folders, the judge's
// verdict cache): atomic writes, and JSON documents read back with the path in the error.
package fsutil

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFile writes data to path so that a reader (or a crash) sees either the old file or the
// complete new one, never a partial file (see WriteFileFunc).
func WriteFile(path string, data []byte) error {
	return WriteFileFunc(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFileFunc is WriteFile for content produced by a streaming writer: the data goes to a
// temporary file in the same folder (created if missing), which is fsynced, made 0644 (stage
// pods run as other uids of one fsGroup, and people read results), renamed over path, and the
// folder is fsynced. If write returns an error, the temporary file is removed and path is left
// as it was.
func WriteFileFunc(path string, write func(w io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("%s: create temporary file: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = write(bw); err != nil {
		return fmt.Errorf("%s: write: %w", path, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("%s: write: %w", path, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("%s: chmod: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("%s: fsync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("%s: close: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("%s: rename: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		// Make the rename durable. Some filesystems refuse fsync on folders; the rename itself
		// has happened, so that is not reported.
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// MarshalJSON is v as the JSON files are written: indented, with a final newline.
func MarshalJSON(v any) ([]byte, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// WriteJSON writes v as indented JSON with a final newline, atomically.
func WriteJSON(path string, v any) error {
	data, err := MarshalJSON(v)
	if err != nil {
		return err
	}
	return WriteFile(path, data)
}

// ReadJSON reads the JSON document at path into v. A missing file's error satisfies
// errors.Is(err, os.ErrNotExist); a malformed one names the path.
func ReadJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
