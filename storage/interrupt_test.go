package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpo-dev/bpo/storage/storagetest"
)

// cuttingProxy forwards TCP connections to target on a loopback port, but closes each
// connection after the client sent limit bytes: a pod killed (or a network cut) mid-upload.
func cuttingProxy(t *testing.T, target string, limit int64) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.CopyN(up, c, limit); up.Close(); c.Close() }()
			go func() { defer wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	return "http://" + l.Addr().String()
}

// An upload cut off on the wire, on a real S3 server, leaves no object and no partial file
// in the server's folder; the marker of a Publish through that connection never appears.
func TestS3UploadCutOnTheWire(t *testing.T) {
	srv := storagetest.Start(t)
	uri := srv.NewBucket(t)
	good := mustOpen(t, uri, s3Options(srv))
	o := s3Options(srv)
	o.Endpoint = cuttingProxy(t, strings.TrimPrefix(srv.Endpoint, "http://"), 256<<10)
	o.MaxAttempts = 1 // the SDK would retry a cut request twice, with backoff: seconds
	cut := mustOpen(t, uri, o)
	ctx := context.Background()

	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	if err := cut.Write(ctx, "run-a/phase-1/behavior/model.safetensors", data); err == nil {
		t.Fatal("a write through a connection cut at 256 KiB succeeded")
	}
	if _, err := good.Read(ctx, "run-a/phase-1/behavior/model.safetensors"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("after a cut upload the object is visible: %v", err)
	}

	local := t.TempDir()
	writeLocal(t, local, map[string]string{"phase-1/behavior/model.safetensors": string(data), "phase-1/sample-0.done.json": "{}"})
	if _, err := Publish(ctx, cut, local, "run-a", []string{"phase-1/behavior/"}, "phase-1/sample-0.done.json"); err == nil {
		t.Fatal("Publish through a cut connection succeeded")
	}
	if objs, err := good.List(ctx, ""); err != nil || len(objs) != 0 {
		t.Fatalf("after a cut Publish the bucket holds %v (%v), want nothing", objs, err)
	}
	// Nor does the server keep a torn file where the object would be.
	filepath.WalkDir(srv.Dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(p, "model.safetensors") {
			t.Errorf("the server kept %s", p)
		}
		return nil
	})
	if _, err := Publish(ctx, good, local, "run-a", []string{"phase-1/behavior/"}, "phase-1/sample-0.done.json"); err != nil {
		t.Fatalf("retry on a good connection: %v", err)
	}
	if got, err := good.Read(ctx, "run-a/phase-1/behavior/model.safetensors"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after the retry: %d bytes, %v", len(got), err)
	}
}

// createHelperEnv makes the test binary a create-only writer in another process.
const createHelperEnv = "BPO_STORAGE_CREATE_HELPER"

func TestCreateHelperProcess(t *testing.T) {
	spec := os.Getenv(createHelperEnv) // dir|content|start-unix-nanos
	if spec == "" {
		t.Skip("helper process of TestCreateOnlyAcrossProcesses")
	}
	parts := strings.SplitN(spec, "|", 3)
	s, err := Open(context.Background(), "file://"+parts[0], Options{})
	if err != nil {
		t.Fatal(err)
	}
	at, _ := strconv.ParseInt(parts[2], 10, 64)
	time.Sleep(time.Until(time.Unix(0, at))) // all writers start together
	err = s.Create(context.Background(), "run/owner.json", []byte(parts[1]))
	switch {
	case err == nil:
		os.Exit(0)
	case errors.Is(err, ErrExist):
		os.Exit(3)
	}
	t.Fatal(err)
}

// Processes sharing one folder (pods on one RWX volume) race to claim a run: one wins.
func TestCreateOnlyAcrossProcesses(t *testing.T) {
	if os.Getenv(createHelperEnv) != "" {
		t.Skip()
	}
	dir := t.TempDir()
	start := time.Now().Add(300 * time.Millisecond).UnixNano()
	const n = 6
	cmds := make([]*exec.Cmd, n)
	for i := range cmds {
		cmds[i] = exec.Command(os.Args[0], "-test.run=^TestCreateHelperProcess$", "-test.count=1")
		cmds[i].Env = append(os.Environ(), createHelperEnv+"="+dir+"|writer-"+strconv.Itoa(i)+"|"+strconv.FormatInt(start, 10))
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	winner := -1
	for i, c := range cmds {
		err := c.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("writers %d and %d both created the key", winner, i)
		case err == nil:
			winner = i
		case errors.As(err, &ee) && ee.ExitCode() == 3:
		default:
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, "run", "owner.json"))
	if winner < 0 || err != nil || string(got) != "writer-"+strconv.Itoa(winner) {
		t.Fatalf("winner %d, stored %q (%v)", winner, got, err)
	}
}
