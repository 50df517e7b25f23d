package storage

import (
	"context"
	"os"
	"testing"

	"github.com/bpo-dev/bpo/storage/storagetest"
)

func TestMain(m *testing.M) {
	// The AWS SDK looks for credentials on the instance metadata address when it finds none
	// elsewhere; tests must never send traffic off loopback.
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	os.Exit(m.Run())
}

// backend opens a fresh, empty store of one kind.
type backend struct {
	name string
	open func(t *testing.T) *Store
}

var backends = []backend{
	{"file", func(t *testing.T) *Store {
		return mustOpen(t, "file://"+t.TempDir()+"/ws", Options{})
	}},
	{"s3", func(t *testing.T) *Store {
		srv := storagetest.Start(t)
		return mustOpen(t, srv.NewBucket(t)+"/runs", s3Options(srv))
	}},
}

func mustOpen(t *testing.T, uri string, o Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), uri, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", uri, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// forEach runs test once per backend, in parallel: the same test passes on file:// and s3://.
func forEach(t *testing.T, test func(t *testing.T, s *Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			test(t, b.open(t))
		})
	}
}

func s3Options(srv *storagetest.Server) Options {
	return Options{
		Endpoint: srv.Endpoint, Region: storagetest.Region, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey,
	}
}
