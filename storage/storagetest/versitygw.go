// Package storagetest starts a real S3 server for tests: versitygw (Apache-2.0) serving a
// temporary folder on a free loopback port, with a generated access key and secret.
//
// The binary comes from hack/tools.sh (`hack/tools.sh versitygw` builds the pinned version
// into ${BPO_CACHE:-$HOME/.cache/bpo}/bin). Without it the S3 tests skip and say how to build
// it; with BPO_REQUIRE_VERSITYGW set (CI) they fail instead.
package storagetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Region is the region the server and its clients use.
const Region = "us-east-1"

// Server is a running versitygw. Reach it with storage.Options{Endpoint: s.Endpoint,
// Region: Region, PathStyle: true, AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey}
// (this package does not import storage, so that storage's own tests can use it).
type Server struct {
	Endpoint  string // http://127.0.0.1:<port>
	AccessKey string
	SecretKey string
	Dir       string // the folder it serves: <Dir>/<bucket>/<key>

	mu      sync.Mutex
	buckets int
}

// Binary is the path of the versitygw binary: $BPO_VERSITYGW, else the tools cache of
// hack/tools.sh, else PATH. The error says how to build it.
func Binary() (string, error) {
	if p := os.Getenv("BPO_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("BPO_VERSITYGW=%s: %w", p, err)
		}
		return p, nil
	}
	cache := os.Getenv("BPO_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "bpo")
	}
	if p := filepath.Join(cache, "bin", "versitygw"); isExecutable(p) {
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("versitygw not found (BPO_VERSITYGW, %s/bin, PATH): build it with `hack/tools.sh versitygw` (pinned version, about 4 minutes once, cached)", cache)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Start starts versitygw for the test and stops it when the test ends. It skips the test
// when the binary is absent, unless BPO_REQUIRE_VERSITYGW is set.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("BPO_REQUIRE_VERSITYGW") != "" {
			t.Fatalf("BPO_REQUIRE_VERSITYGW is set but %v", err)
		}
		t.Skipf("S3 tests skipped: %v", err)
	}
	var last error
	for range 3 { // the free port we picked may be taken before versitygw binds it
		s, err := start(t, bin)
		if err == nil {
			return s
		}
		last = err
	}
	t.Fatalf("starting versitygw: %v", last)
	return nil
}

func start(t testing.TB, bin string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		Endpoint:  "http://127.0.0.1:" + port,
		AccessKey: "AK" + strings.ToUpper(randomHex(9)),
		SecretKey: randomHex(20),
		Dir:       t.TempDir(),
	}
	cmd := exec.Command(bin, "--port", "127.0.0.1:"+port, "--region", Region, "--quiet", "posix", s.Dir)
	// Credentials through the environment, not argv, where any process could read them.
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.AccessKey, "ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	// The server dies with the test binary even if it is killed before its cleanups run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			exited <- err
			return nil, fmt.Errorf("versitygw exited (%v): %s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("versitygw did not listen on 127.0.0.1:%s within 10s: %s", port, out.String())
		}
	}
	t.Cleanup(stop)
	return s, nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewBucket creates a fresh bucket through the S3 API and returns its URI.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	s.buckets++
	name := fmt.Sprintf("bpo-test-%d", s.buckets)
	s.mu.Unlock()
	client := s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint),
		Region:       Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return "s3://" + name
}
