package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"gocloud.dev/blob"
)

// Object is one entry of a listing.
type Object struct {
	Key     string // relative to the store (or to List's prefix: see List)
	Size    int64
	ModTime time.Time
}

// key is the bucket key of a store key.
func (s *Store) key(k string) string { return join(s.loc.prefix, k) }

// Read returns a whole object.
func (s *Store) Read(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey("storage: key", key); err != nil {
		return nil, err
	}
	data, err := s.b.ReadAll(ctx, s.key(key))
	if err != nil {
		return nil, s.fail("read", key, err)
	}
	return data, nil
}

// NewReader streams an object; the caller closes it. An object missing is reported here,
// not on the first Read.
func (s *Store) NewReader(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey("storage: key", key); err != nil {
		return nil, err
	}
	r, err := s.b.NewReader(ctx, s.key(key), nil)
	if err != nil {
		return nil, s.fail("read", key, err)
	}
	return &reader{r: r, s: s, key: key}, nil
}

// reader redacts and classifies the errors of a streaming read like every other operation.
type reader struct {
	r   *blob.Reader
	s   *Store
	key string
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = r.s.fail("read", r.key, err)
	}
	return n, err
}

func (r *reader) Close() error { return r.s.fail("close", r.key, r.r.Close()) }

// Ping checks that the store answers with these credentials and that its bucket exists: one
// listing of at most one key. Open contacts nothing, so a pod calls Ping first to fail fast
// with a clear cause (a wrong endpoint, a rejected key, a missing bucket) instead of taking
// them for "object not found" later: a HEAD of a missing bucket cannot tell the two apart.
func (s *Store) Ping(ctx context.Context) error {
	prefix := s.loc.prefix
	if prefix != "" {
		prefix += "/"
	}
	_, _, err := s.b.ListPage(ctx, blob.FirstPageToken, 1, &blob.ListOptions{Prefix: prefix})
	return s.fail("ping", "", err)
}

// Exists reports whether an object is there.
func (s *Store) Exists(ctx context.Context, key string) (bool, error) {
	if err := checkKey("storage: key", key); err != nil {
		return false, err
	}
	ok, err := s.b.Exists(ctx, s.key(key))
	if err != nil {
		return false, s.fail("stat", key, err)
	}
	return ok, nil
}

// Write replaces an object with data; readers see the old object or the new one, never a part.
func (s *Store) Write(ctx context.Context, key string, data []byte) error {
	_, err := s.WriteFrom(ctx, key, bytes.NewReader(data))
	return err
}

// WriteFrom streams r into an object and returns the bytes written. If r fails or ctx ends
// before the end, the write is abandoned: the object keeps its old content (or stays
// absent), never a part of the new one.
func (s *Store) WriteFrom(ctx context.Context, key string, r io.Reader) (int64, error) {
	return s.write(ctx, key, r, false)
}

// Create writes data only if key is absent: of two writers exactly one succeeds, and the
// other gets an error matching ErrExist (claiming a workspace with owner.json).
//
// S3 and S3-compatible servers implement it with If-None-Match: "*" (AWS since 2024; MinIO,
// Ceph RGW, versitygw). A server that ignores that header overwrites silently: there,
// read the object back and compare (docs/storage.md). file:// stores use a hard link, atomic
// across processes and hosts; gs:// a generation-0 precondition.
func (s *Store) Create(ctx context.Context, key string, data []byte) error {
	if s.loc.scheme == "file" {
		if err := checkKey("storage: key", key); err != nil {
			return err
		}
		return s.fail("create", key, s.createFile(key, data))
	}
	_, err := s.write(ctx, key, bytes.NewReader(data), true)
	return err
}

func (s *Store) write(ctx context.Context, key string, r io.Reader, ifNotExist bool) (int64, error) {
	op := "write"
	if ifNotExist {
		op = "create"
	}
	if err := checkKey("storage: key", key); err != nil {
		return 0, err
	}
	// Cancelling the writer's context before Close is how gocloud abandons a write.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var file *os.File // file:// only: the temp file, synced before the rename makes it visible
	w, err := s.b.NewWriter(wctx, s.key(key), &blob.WriterOptions{
		ContentType: "application/octet-stream", // no sniffing: bytes go straight to the driver
		BufferSize:  s.partSize,
		IfNotExist:  ifNotExist,
		BeforeWrite: func(as func(any) bool) error { as(&file); return nil },
	})
	if err != nil {
		return 0, s.fail(op, key, err)
	}
	n, err := io.Copy(w, r)
	if err == nil && file != nil {
		// fileblob renames without syncing: after a node crash the new name could hold
		// nothing. pipeline's own atomic writes sync too.
		err = file.Sync()
	}
	if err != nil {
		cancel()
		_ = w.Close()
		return n, s.fail(op, key, err)
	}
	if s.afterCopy != nil {
		s.afterCopy(key)
	}
	if err := w.Close(); err != nil {
		return n, s.fail(op, key, err)
	}
	return n, nil
}

// Delete removes an object; an object already gone is not an error (deletes are retried).
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := checkKey("storage: key", key); err != nil {
		return err
	}
	err := s.b.Delete(ctx, s.key(key))
	if err != nil && !errors.Is(s.fail("delete", key, err), ErrNotExist) {
		return s.fail("delete", key, err)
	}
	return nil
}

// List returns the objects under prefix ("" for the whole store; "phase-1/samples" and
// "phase-1/samples/" both mean the folder), sorted by key, with keys relative to the store.
// Temporary files of writes in progress are never listed.
func (s *Store) List(ctx context.Context, prefix string) ([]Object, error) {
	p, err := checkPrefix("storage: List prefix", prefix)
	if err != nil {
		return nil, err
	}
	full := s.key(p)
	if full != "" {
		full += "/"
	}
	var out []Object
	it := s.b.List(&blob.ListOptions{Prefix: full})
	for {
		o, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, s.fail("list", p, err)
		}
		if o.IsDir {
			continue
		}
		name := o.Key[strings.LastIndexByte(o.Key, '/')+1:]
		if isTempName(name) {
			continue
		}
		k := strings.TrimPrefix(o.Key, s.loc.prefix)
		k = strings.TrimPrefix(k, "/")
		out = append(out, Object{Key: k, Size: o.Size, ModTime: o.ModTime})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}
