package model

import (
	"io"

	"github.com/bpo-dev/bpo/internal/fsutil"
)

// atomicWriteHook, when non-nil, wraps the writer that WriteFileAtomicFunc hands to
// its callback. Tests use it to simulate a write that fails half way.
var atomicWriteHook func(io.Writer) io.Writer

// WriteFileAtomic writes data to path so that a reader (or a crash) sees either the
// old file or the complete new one, never a partial file (internal/fsutil.WriteFile).
func WriteFileAtomic(path string, data []byte) error {
	return WriteFileAtomicFunc(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFileAtomicFunc is WriteFileAtomic for content produced by a streaming writer.
// If write returns an error, the temporary file is removed and path is left as it was.
func WriteFileAtomicFunc(path string, write func(w io.Writer) error) error {
	return fsutil.WriteFileFunc(path, func(w io.Writer) error {
		if atomicWriteHook != nil {
			w = atomicWriteHook(w)
		}
		return write(w)
	})
}
