//go:build e2e

package e2e

// TestSamplerEngine: an AlignmentRun whose sample stage draws through a `bpo serve` Deployment
// (spec.sampler.engine kind OpenAI). The server mounts the run's workspace claim at /workspace
// with the same subPath as the stage pods, so it reads each phase's behavior adapter at the path
// the stage sends (docs/serve.md, "Sampling a run through a server"). The run must succeed, and
// the server's own metrics must show it answered every prompt of every phase and loaded one
// adapter per phase.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

const (
	enginePhases  = 2
	enginePrompts = 16 // per phase: spec.budget.pairs / phases
)

func TestSamplerEngine(t *testing.T) {
	dumpOnFailure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	faultSetup(ctx, t) // the chart, the manager and the workspace claim, unless there already
	defer stopManager()

	const name, secret, token = "engine", "engine-key", "engine-e2e-token-6b1f"
	addr, served := deployServe(ctx, t, secret, token)
	t0 := time.Now()
	applyManifest(ctx, t, name+".yaml", quickstart(t, name, func(obj map[string]any) {
		setPath(obj, enginePhases, "spec", "trustRegion", "phases")
		setPath(obj, enginePhases*enginePrompts, "spec", "budget", "pairs")
		setPath(obj, 8, "spec", "budget", "evalPrompts")
		setPath(obj, false, "spec", "evaluator", "baseline")
		setPath(obj, false, "spec", "evaluator", "everyPhase")
		setPath(obj, map[string]any{"kind": "OpenAI", "url": "http://" + addr + "/v1", "model": served,
			"maxConcurrency": 4, "allowInsecureHTTP": true, "secretRef": map[string]any{"name": secret, "key": "token"}},
			"spec", "sampler", "engine")
	}))
	run := waitSucceeded(ctx, t, name, 8*time.Minute)
	record(t, "(j) sampler engine run applied -> Succeeded", time.Since(t0))

	m := scrapeServe(t, addr)
	if got := m[`bpo_serve_requests_total{code="200",endpoint="completions"}`]; got != enginePhases*enginePrompts {
		t.Errorf("the server answered %v completion requests, want one per prompt: %d", got, enginePhases*enginePrompts)
	}
	if got := m[`bpo_serve_requests_total{code="200",endpoint="load_lora_adapter"}`]; got != enginePhases {
		t.Errorf("the server loaded %v adapters, want one per phase: %d", got, enginePhases)
	}
	if got := m["bpo_serve_lora_adapters"]; got != 1 {
		t.Errorf("%v adapters loaded after the run, want 1 (each phase unloads the one before)", got)
	}
	for _, pr := range run.Status.PhaseResults {
		if pr.Phase > 0 && pr.Samples != 2*enginePrompts {
			t.Errorf("phase %d: %d samples, want %d", pr.Phase, pr.Samples, 2*enginePrompts)
		}
	}
	if b, _ := json.Marshal(run.Status); strings.Contains(string(b), token) {
		t.Error("the sampler engine's token is in the run's status")
	}
	// The sample pods got the token from the Secret, by reference.
	job, err := env.cs.BatchV1().Jobs(namespace).Get(ctx, name+"-p1-sample", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range job.Spec.Template.Spec.Containers[0].Env {
		found = found || (e.Name == alignv1.EnvSamplerToken && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == secret)
	}
	if !found {
		t.Errorf("sample Job env %v lacks %s from Secret %s", job.Spec.Template.Spec.Containers[0].Env, alignv1.EnvSamplerToken, secret)
	}
	t.Logf("served %v completions, %v tokens generated", m[`bpo_serve_requests_total{code="200",endpoint="completions"}`], m["bpo_serve_generation_tokens_total"])
}

// deployServe creates the engine's Secret and a `bpo serve` Deployment with runtime LoRA loading
// on a free loopback port, mounting the workspace claim as the stage pods do, waits until it is
// ready, and returns its address and the base model's served name.
func deployServe(ctx context.Context, t *testing.T, secret, token string) (addr, served string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = l.Addr().String()
	l.Close()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: namespace}, StringData: map[string]string{"token": token}}
	if _, err := env.cs.CoreV1().Secrets(namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The built-in model from the repository's folder, or the tiny one in the workspace.
	served, modelDir := builtinModel, filepath.Join(env.root, "trainer/task/models", builtinModel)
	if ak.model == "tiny" {
		served, modelDir = "tiny", "/workspace/"+tinyModelPath
	}
	manifest := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: bpo-serve
spec:
  replicas: 1
  selector: {matchLabels: {app: bpo-serve}}
  template:
    metadata: {labels: {app: bpo-serve}}
    spec:
      containers:
      - name: serve
        image: bpo:e2e
        command: [bpo, serve, --model, %q, --served-model-name, %q, --addr, %q, --enable-runtime-lora]
        volumeMounts:
        - {name: workspace, mountPath: /workspace, subPath: runs, readOnly: true}
      volumes:
      - name: workspace
        persistentVolumeClaim: {claimName: %s}
`, modelDir, served, addr, workspaceClaim)
	applyManifest(ctx, t, "bpo-serve.yaml", []byte(manifest))
	t0 := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := poll(wctx, 200*time.Millisecond, func() (bool, error) {
		resp, err := http.Get("http://" + addr + "/health")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}); err != nil {
		t.Fatalf("the bpo serve Deployment never became ready on %s: %v", addr, err)
	}
	record(t, "(j) bpo serve Deployment applied -> ready", time.Since(t0))
	return addr, served
}

// scrapeServe reads the server's /metrics: series (name and labels as printed) -> value.
func scrapeServe(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
