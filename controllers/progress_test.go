package controllers

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
	"github.com/bpo-dev/bpo/stage/contract"
)

// TestFoldProgress: the pods' reports sum into one stage progress (pure).
func TestFoldProgress(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	rep := func(done, total int64, elapsed float64, metrics map[string]float64, age time.Duration) podProgress {
		return podProgress{report: alignv1.ProgressReport{Done: done, Total: total, ElapsedSeconds: elapsed, Metrics: metrics}, at: now.Add(-age)}
	}
	at := func(age time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(-age)); return &t }
	cases := []struct {
		name string
		pods map[int32]podProgress
		want *alignv1.StageProgress
	}{
		{"no reports", nil, nil},
		{"one pod halfway", map[int32]podProgress{0: rep(16, 32, 8, nil, time.Second)},
			&alignv1.StageProgress{Phase: 1, Stage: "train", Done: 16, Total: 32, Percent: 50, Rate: "2", ETA: "8s", Pods: 1, UpdateTime: at(time.Second)}},
		{"two pods: counts and rates add, metrics average", map[int32]podProgress{
			0: rep(8, 32, 4, map[string]float64{"loss": 0.6}, 2*time.Second),
			1: rep(24, 32, 4, map[string]float64{"loss": 0.8}, time.Second)},
			&alignv1.StageProgress{Phase: 1, Stage: "train", Done: 32, Total: 64, Percent: 50, Rate: "8", ETA: "4s", Pods: 2,
				Metrics: map[string]string{"loss": "0.7"}, UpdateTime: at(time.Second)}},
		{"a pod that has not started counts its total but no rate", map[int32]podProgress{
			0: rep(0, 10, 0, nil, time.Second), 1: rep(5, 10, 5, nil, time.Second)},
			&alignv1.StageProgress{Phase: 1, Stage: "train", Done: 5, Total: 20, Percent: 25, Rate: "1", ETA: "15s", Pods: 2, UpdateTime: at(time.Second)}},
		{"a stale report is left out", map[int32]podProgress{
			0: rep(10, 10, 5, nil, progressStale+time.Second), 1: rep(1, 10, 1, nil, 0)},
			&alignv1.StageProgress{Phase: 1, Stage: "train", Done: 1, Total: 10, Percent: 10, Rate: "1", ETA: "9s", Pods: 1, UpdateTime: at(0)}},
		{"only stale reports", map[int32]podProgress{0: rep(1, 10, 1, nil, progressStale+time.Second)}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, foldProgress(1, "train", tc.pods, now)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestCheckReport(t *testing.T) {
	ok := alignv1.ProgressReport{Done: 1, Total: 2, ElapsedSeconds: 1, Metrics: map[string]float64{"loss": 0.5}}
	if err := checkReport(&ok); err != nil {
		t.Fatal(err)
	}
	many := map[string]float64{}
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"} {
		many[k] = 1
	}
	for name, r := range map[string]alignv1.ProgressReport{
		"done > total":   {Done: 3, Total: 2},
		"negative":       {Done: -1, Total: 2},
		"nan elapsed":    {Done: 1, Total: 2, ElapsedSeconds: nan()},
		"too many":       {Done: 1, Total: 2, Metrics: many},
		"bad name":       {Done: 1, Total: 2, Metrics: map[string]float64{"Loss Value": 1}},
		"infinite value": {Done: 1, Total: 2, Metrics: map[string]float64{"loss": inf()}},
	} {
		if err := checkReport(&r); err == nil {
			t.Errorf("%s: accepted %+v", name, r)
		}
	}
}

func nan() float64 { z := 0.0; return z / z }
func inf() float64 { z := 0.0; return 1 / z }

// TestLiveProgress: stage pods report to the progress endpoint with pod-bound tokens for its
// audience, reviewed by the real API server, and the run's status shows the sum while the stage
// runs; anything else is refused without reaching status.
func TestLiveProgress(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t, "progress")
	cs, err := kubernetes.NewForConfig(cfg)
	must(t, err)
	progress := NewProgressServer(k8sClient, APITokenReviewer{Client: cs.AuthenticationV1()})
	startManager(t, ns, func(r *AlignmentRunReconciler) {
		r.Progress, r.ProgressURL = progress, "http://bpo-progress.bpo-system.svc:8082"
	})
	srv := httptest.NewServer(progress)
	defer srv.Close()

	run := createRun(t, testutil.MakeRun(ns, "live").Phases(1).Members(2).SamplerParallelism(2).Obj())
	job := waitJob(t, ns, JobName(run.Name, 1, alignv1.StageSample, 0))

	// The pods are told where to report and get a token for the endpoint's audience only.
	pod := job.Spec.Template.Spec
	env := map[string]string{}
	for _, e := range pod.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env[contract.EnvProgressURL] != "http://bpo-progress.bpo-system.svc:8082" || env[contract.EnvProgressTokenFile] != contract.ProgressTokenFile {
		t.Errorf("stage env %v", env)
	}
	var projected *corev1.ServiceAccountTokenProjection
	for _, v := range pod.Volumes {
		if v.Projected != nil && len(v.Projected.Sources) == 1 && v.Projected.Sources[0].ServiceAccountToken != nil {
			projected = v.Projected.Sources[0].ServiceAccountToken
		}
	}
	if projected == nil || projected.Audience != contract.ProgressAudience || ptr.Deref(projected.ExpirationSeconds, 0) != contract.ProgressTokenSeconds ||
		ptr.Deref(pod.AutomountServiceAccountToken, true) {
		t.Errorf("progress token volume %+v, automountServiceAccountToken %v", projected, pod.AutomountServiceAccountToken)
	}

	running := corev1.PodStatus{Phase: corev1.PodRunning}
	pod0, err := testutil.PendingPod(ctx, k8sClient, job, 0, running)
	must(t, err)
	pod1, err := testutil.PendingPod(ctx, k8sClient, job, 1, running)
	must(t, err)
	stranger := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "stranger", Namespace: ns},
		Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "c", Image: "example.com/x"}}}}
	must(t, k8sClient.Create(ctx, stranger))
	token := func(p *corev1.Pod, audiences ...string) string {
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "default", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences: audiences, ExpirationSeconds: ptr.To(int64(600)),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
		}}, metav1.CreateOptions{})
		must(t, err)
		return tr.Status.Token
	}
	post := func(token, body string) int {
		req, err := http.NewRequest(http.MethodPost, srv.URL+ProgressPath, bytes.NewBufferString(body))
		must(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	valid := `{"stage":"sample","done":8,"total":32,"elapsedSeconds":4,"metrics":{"loss":0.6}}`
	for _, c := range []struct {
		name, token, body string
		want              int
	}{
		{"no token", "", valid, http.StatusUnauthorized},
		{"not a token", "abc", valid, http.StatusUnauthorized},
		{"a token for the API server's audience", token(pod0), valid, http.StatusUnauthorized},
		{"a pod that is not a stage pod", token(stranger, contract.ProgressAudience), valid, http.StatusForbidden},
		{"not a report", token(pod0, contract.ProgressAudience), `{"stage":"sample","dne":1}`, http.StatusBadRequest},
		{"done beyond total", token(pod0, contract.ProgressAudience), `{"done":40,"total":32}`, http.StatusBadRequest},
	} {
		if got := post(c.token, c.body); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	consistently(t, time.Second, "refused reports reach no status", func() string {
		if p := getRun(t, ns, run.Name).Status.StageProgress; p != nil {
			return "stageProgress " + p.Stage
		}
		return ""
	})

	if got := post(token(pod0, contract.ProgressAudience), valid); got != http.StatusNoContent {
		t.Fatalf("pod 0's report: %d", got)
	}
	if got := post(token(pod1, contract.ProgressAudience), `{"stage":"sample","done":24,"total":32,"elapsedSeconds":4,"metrics":{"loss":0.8}}`); got != http.StatusNoContent {
		t.Fatalf("pod 1's report: %d", got)
	}
	eventually(t, waitTimeout, "status.stageProgress sums both pods", func() string {
		p := getRun(t, ns, run.Name).Status.StageProgress
		if p == nil || p.Pods != 2 {
			return "not yet both pods"
		}
		got := *p
		got.UpdateTime = nil
		want := alignv1.StageProgress{Phase: 1, Stage: "sample", Done: 32, Total: 64, Percent: 50, Rate: "8", ETA: "4s", Pods: 2, Metrics: map[string]string{"loss": "0.7"}}
		return cmp.Diff(want, got)
	})
	cols, names := printerColumns(t, ns, run.Name)
	if cols["Progress"] != "50" || !slices.Contains(names, "ETA") {
		t.Errorf("printer columns %v %v", cols, names)
	}

	// The stage ends: its progress goes with it.
	succeed(t, ns, job.Name)
	eventually(t, waitTimeout, "the next stage starts without progress", func() string {
		r := getRun(t, ns, run.Name)
		if r.Status.Stage != alignv1.StageLabel || r.Status.StageProgress != nil {
			return "stage " + r.Status.Stage
		}
		return ""
	})
}
