//go:build e2e

package e2e

// TestObjectStore: one AlignmentRun whose workspace is a bucket on a real S3 server (versitygw
// on loopback; stage pods are host processes and reach it), with no PVC at all. A sample pod is
// killed in the middle of publishing (a proxy holds its upload of a data object, then the pod
// is evicted): its replacement completes the stage, the run succeeds with every prompt counted
// once, and the keys never reach status, events or the manager's log.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bpo-dev/bpo/storage"
	"github.com/bpo-dev/bpo/storage/storagetest"
)

// holdingProxy forwards S3 requests to the server, except the first PUT whose path ends with
// needle: that one is held (never forwarded) until its client goes away, as an upload cut by
// the pod's death.
type holdingProxy struct {
	*httptest.Server
	held chan struct{}
	once sync.Once
}

func newHoldingProxy(t *testing.T, target, needle string) *holdingProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &holdingProxy{held: make(chan struct{})}
	// The Host header is left as the client sent it (the proxy's), which the request's
	// signature covers.
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hold := false
		if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, needle) {
			p.once.Do(func() { hold = true })
		}
		if hold {
			// Take the whole body (the upload is on the wire) and never answer: the server never
			// sees it. With the body read, the server notices the client's death (the context
			// ends) and the handler returns.
			_, _ = io.Copy(io.Discard, r.Body)
			close(p.held)
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Server.Close)
	return p
}

func TestObjectStore(t *testing.T) {
	dumpOnFailure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	faultSetup(ctx, t)
	defer stopManager()
	if ak.model == "tiny" {
		t.Skip("E2E_MODEL=tiny keeps the model on the workspace volume; this run has none (use the built-in model)")
	}
	srv := storagetest.Start(t)
	bucket := srv.NewBucket(t)
	const name = "objstore"
	const needle = "/" + name + "/phase-1/samples/shard-0.jsonl"
	proxy := newHoldingProxy(t, srv.Endpoint, needle)
	mustKubectl(ctx, t, "-n", namespace, "create", "secret", "generic", "s3-keys",
		"--from-literal=AWS_ACCESS_KEY_ID="+srv.AccessKey, "--from-literal=AWS_SECRET_ACCESS_KEY="+srv.SecretKey)

	t0 := time.Now()
	applyManifest(ctx, t, name+".yaml", faultRun(t, name, func(obj map[string]any) {
		setPath(obj, map[string]any{"objectStore": map[string]any{
			"uri": bucket + "/runs", "endpoint": proxy.URL, "region": storagetest.Region,
			"secretRef": map[string]any{"name": "s3-keys"},
		}}, "spec", "workspace")
		// Models out to the same bucket under another prefix (its own secretRef, the same keys).
		setPath(obj, map[string]any{
			"uri": bucket + "/models", "endpoint": proxy.URL, "region": storagetest.Region,
			"secretRef": map[string]any{"name": "s3-keys"},
		}, "spec", "output")
	}))
	select {
	case <-proxy.held:
	case <-time.After(4 * time.Minute):
		t.Fatal("no sample pod published shard 0 within 4 minutes")
	}
	record(t, "(o) apply -> sample shard 0 upload held", time.Since(t0))
	sample := name + "-p1-sample"
	victim := waitRunningPod(ctx, t, sample)
	for victim.Annotations["batch.kubernetes.io/job-completion-index"] != "0" {
		victim = waitRunningPod(ctx, t, sample, victim.UID)
	}
	tKill := time.Now()
	if err := env.cs.CoreV1().Pods(namespace).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: victim.Name, Namespace: namespace}}); err != nil {
		t.Fatalf("evict %s: %v", victim.Name, err)
	}
	t.Logf("evicted sample pod %s in the middle of its upload of %s", victim.Name, needle)
	run := waitSucceeded(ctx, t, name, 5*time.Minute)
	record(t, "(o) pod killed mid-upload -> run Succeeded", time.Since(tKill))
	record(t, "(o) object-store run, apply -> Succeeded", time.Since(t0))

	// The workspace is the bucket: read it as a volume would be read.
	st, err := storage.Open(ctx, bucket+"/runs/"+name, storage.Options{Endpoint: srv.Endpoint, Region: storagetest.Region, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	objs, err := st.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	for _, want := range []string{"owner.json", "run.yaml", "phase-1/sample-shards.json", "phase-1/sample-0.done.json", "phase-1/sample-1.done.json",
		"phase-1/label-0.done.json", "phase-1/train-0.done.json", "phase-1/train-1.done.json", "phase-1/eval.done.json", "phase-1/eval/result.json"} {
		if !slices.Contains(keys, want) {
			t.Errorf("bucket lacks %s; it holds %v", want, keys)
		}
	}
	// Every prompt sampled once, in order, across the shards the markers count.
	rows := 0
	for s := range faultShards {
		data, err := st.Read(ctx, fmt.Sprintf("phase-1/samples/shard-%d.jsonl", s))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var row struct{ Index int }
			if err := json.Unmarshal(sc.Bytes(), &row); err != nil || row.Index != rows {
				t.Fatalf("sample row %d of shard %d: index %d (%v)", rows, s, row.Index, err)
			}
			rows++
		}
	}
	if rows != faultPrompts {
		t.Fatalf("the sample shards hold %d rows, want %d", rows, faultPrompts)
	}
	// The export stage wrote the final policy and adapter, markers included, and status names them.
	if o := run.Status.Outputs; o == nil || o.Policy != bucket+"/models/"+name+"/policy" || o.Adapter != bucket+"/models/"+name+"/adapter" {
		t.Errorf("status.outputs = %+v", o)
	}
	out, err := storage.Open(ctx, bucket+"/models/"+name, storage.Options{Endpoint: srv.Endpoint, Region: storagetest.Region, PathStyle: true,
		AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for _, key := range []string{"policy/config.json", "policy/model.safetensors", "policy/.complete", "adapter/adapter_config.json",
		"adapter/adapter_model.safetensors", "adapter/.complete"} {
		if ok, err := out.Exists(ctx, key); !ok || err != nil {
			t.Errorf("the export lacks %s (%v)", key, err)
		}
	}
	ph := findPhase(run, 1)
	if ph == nil || ph.Samples != 2*faultPrompts {
		t.Fatalf("status phase 1 %+v: want %d samples (each prompt once)", ph, 2*faultPrompts)
	}

	// The keys went to the pods by Secret reference only.
	status, _ := json.Marshal(run)
	evs, err := env.cs.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	events, _ := json.Marshal(evs)
	managerLog, _ := os.ReadFile(ak.managerLog)
	for what, text := range map[string]string{"status": string(status), "events": string(events), "manager log": string(managerLog)} {
		if strings.Contains(text, srv.SecretKey) || strings.Contains(text, srv.AccessKey) {
			t.Errorf("the object store's credentials appear in the %s", what)
		}
	}
}
