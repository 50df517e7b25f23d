package model

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// atomicWriteHook, when non-nil, wraps the writer that WriteFileAtomicFunc hands to
// its callback. Tests use it to simulate a write that fails half way.
var atomicWriteHook func(io.Writer) io.Writer

// WriteFileAtomic writes data to path so that a reader (or a crash) sees either the
// old file or the complete new one, never a partial file: the data goes to a temporary
// file in the same directory, which is fsynced, renamed over path, and the directory
// is fsynced. The file mode is 0644.
func WriteFileAtomic(path string, data []byte) error {
	return WriteFileAtomicFunc(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFileAtomicFunc is WriteFileAtomic for content produced by a streaming writer.
// If write returns an error, the temporary file is removed and path is left as it was.
func WriteFileAtomicFunc(path string, write func(w io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
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
	var w io.Writer = bw
	if atomicWriteHook != nil {
		w = atomicWriteHook(w)
	}
	if err = write(w); err != nil {
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
		// Make the rename durable. Some filesystems refuse fsync on directories;
		// the rename itself has happened, so that is not reported.
		_ = d.Sync()
		d.Close()
	}
	return nil
}
