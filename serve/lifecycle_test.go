package serve

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
)

// TestClientGoneFreesRows: a client that disconnects mid-generation releases its batch row and
// its in-flight slot; the next request runs.
func TestClientGoneFreesRows(t *testing.T) {
	g := newGate()
	ts := startServer(t, Options{MaxBatch: 1}, g.hook)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := ts.client.Completions.New(ctx, longRequest(1))
		done <- err
	}()
	<-g.entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
	close(g.release)
	// The engine notices at its next step and frees the only row: a new request completes, and
	// Shutdown finds nothing in flight.
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	if _, err := ts.client.Completions.New(rctx, longRequest(2)); err != nil {
		t.Fatalf("the request after a cancelled one: %v", err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := ts.s.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown after a cancelled request: %v", err)
	}
}

// TestUnloadWhileRunning: requests accepted for an adapter finish after it is unloaded, and its
// engine then exits.
func TestUnloadWhileRunning(t *testing.T) {
	g := newGate()
	ts := startServer(t, Options{RuntimeLoRA: true, LoRA: map[string]string{"m0": filepath.Join(tinyDir, "adapters", "member-0.safetensors")}}, g.hook)
	eng, e := ts.s.engineFor("m0")
	if e != nil {
		t.Fatal(e)
	}
	done := make(chan error, 1)
	go func() {
		p := longRequest(1)
		p.Model = "m0"
		_, err := ts.client.Completions.New(context.Background(), p)
		done <- err
	}()
	<-g.entered
	if code, body := ts.post(t, "/v1/unload_lora_adapter", map[string]string{"lora_name": "m0"}); code != 200 {
		t.Fatalf("unload: %d %s", code, body)
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatalf("request accepted before the unload: %v", err)
	}
	select {
	case <-eng.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the unloaded adapter's engine did not exit")
	}
}

// TestDecodeFailureIs500: a panic inside a decode step fails the requests in it with a 500, and
// the engine goes on serving.
func TestDecodeFailureIs500(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	ts := startServer(t, Options{}, func() {
		if fail.CompareAndSwap(true, false) {
			panic("injected")
		}
	})
	_, err := ts.client.Completions.New(context.Background(), longRequest(1))
	var ae *openai.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusInternalServerError || ae.Type != "server_error" {
		t.Fatalf("request in a failed step: %v %s", err, apiErrorBody(err))
	}
	ts.complete(t, longRequest(1))
}
