package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
)

// Live progress (docs/design.md, "Live progress"). Stage pods have no API credentials and keep
// none: each gets a projected service-account token whose audience is ours alone
// (contract.ProgressAudience, useless against the API server), bound to the pod (it dies with it)
// and short-lived, and posts its progress with it to this endpoint on the manager. The manager
// asks the API server who the token is (TokenReview), takes the pod from the token's binding (not
// from the request), checks that the pod belongs to a stage Job of a run, and keeps the newest
// report of each of the stage's pods in memory. Reconcile folds them into status.stageProgress.
// A report says only how far the pod is: the run, phase, stage and index come from the pod.

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create

const (
	// ProgressPath is where stage pods post their progress.
	ProgressPath = contract.ProgressPath
	// progressBodyLimit bounds a report (a few hundred bytes in practice).
	progressBodyLimit = 16 << 10
	// progressFoldInterval is the least time between two reconciles a run's reports trigger:
	// the status write rate a running stage costs the API server.
	progressFoldInterval = 5 * time.Second
	// progressStale: a report older than this is dropped from the fold (its pod is gone).
	progressStale = 10 * time.Minute
	// tokenCacheTTL: a token reviewed once is trusted again for this long without asking the API
	// server (bounded tokens live an hour; a pod posts every few seconds).
	tokenCacheTTL = 2 * time.Minute
	tokenCacheMax = 10000
	// Extra keys of a pod-bound service-account token's TokenReview user.
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// TokenReviewer asks the API server who a bearer token is, for an audience.
type TokenReviewer interface {
	Review(ctx context.Context, token, audience string) (*authenticationv1.UserInfo, error)
}

// APITokenReviewer reviews tokens with the API server's TokenReview API.
type APITokenReviewer struct {
	Client authnclient.TokenReviewsGetter
}

// Review implements TokenReviewer.
func (a APITokenReviewer) Review(ctx context.Context, token, audience string) (*authenticationv1.UserInfo, error) {
	tr, err := a.Client.TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		return nil, errUnauthenticated
	}
	for _, a := range tr.Status.Audiences {
		if a == audience {
			return &tr.Status.User, nil
		}
	}
	return nil, errUnauthenticated
}

var errUnauthenticated = errors.New("unauthenticated")

// ProgressServer is the manager's progress endpoint and the store of the newest reports.
type ProgressServer struct {
	Reader   client.Reader // the manager's cache: pods and Jobs of runs
	Reviewer TokenReviewer
	Now      func() time.Time // nil: time.Now

	mu     sync.Mutex
	runs   map[types.NamespacedName]*runProgress
	tokens map[[32]byte]tokenEntry
	events chan event.GenericEvent
}

type runProgress struct {
	phase        int32
	stage        string
	attempt      string
	pods         map[int32]podProgress
	lastEnqueued time.Time
	delayed      bool // a fold is scheduled for when progressFoldInterval has passed
}

type podProgress struct {
	report alignv1.ProgressReport
	at     time.Time
}

type tokenEntry struct {
	ns, pod string
	uid     types.UID
	expires time.Time
}

// NewProgressServer returns a server that reads pods and Jobs with reader and reviews tokens
// with reviewer.
func NewProgressServer(reader client.Reader, reviewer TokenReviewer) *ProgressServer {
	return &ProgressServer{
		Reader: reader, Reviewer: reviewer,
		runs: map[types.NamespacedName]*runProgress{}, tokens: map[[32]byte]tokenEntry{},
		events: make(chan event.GenericEvent, 1024),
	}
}

func (p *ProgressServer) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Events are the runs whose reports asked for a reconcile (SetupWithManager watches them).
func (p *ProgressServer) Events() <-chan event.GenericEvent { return p.events }

// ServeHTTP accepts one pod's report: 204 when stored, 401 for a token that is not a live
// pod's token for our audience, 403 for a pod that is not a run's stage pod, 400 for a bad
// report. Answers never echo the token or the body.
func (p *ProgressServer) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != ProgressPath {
		http.NotFound(w, req)
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST a progress report", http.StatusMethodNotAllowed)
		return
	}
	token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		http.Error(w, "a bearer token (the pod's projected "+contract.ProgressAudience+" token) is required", http.StatusUnauthorized)
		return
	}
	ctx := req.Context()
	who, err := p.identify(ctx, token)
	if err != nil {
		status := http.StatusUnauthorized
		if !errors.Is(err, errUnauthenticated) {
			status = http.StatusServiceUnavailable // the API server could not be asked
		}
		http.Error(w, err.Error(), status)
		return
	}
	pod, run, err := p.stagePod(ctx, who)
	if err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	var rep alignv1.ProgressReport
	dec := json.NewDecoder(io.LimitReader(req.Body, progressBodyLimit+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		http.Error(w, "the body is not a progress report: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := checkReport(&rep); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.store(run, pod, rep)
	w.WriteHeader(http.StatusNoContent)
}

// identify reviews a token (or finds it in the cache) and returns the pod it is bound to.
func (p *ProgressServer) identify(ctx context.Context, token string) (tokenEntry, error) {
	key := sha256.Sum256([]byte(token))
	now := p.now()
	p.mu.Lock()
	e, ok := p.tokens[key]
	p.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e, nil
	}
	user, err := p.Reviewer.Review(ctx, token, contract.ProgressAudience)
	if err != nil {
		return tokenEntry{}, err
	}
	ns, _, ok := strings.Cut(strings.TrimPrefix(user.Username, "system:serviceaccount:"), ":")
	names, uids := user.Extra[extraPodName], user.Extra[extraPodUID]
	if !strings.HasPrefix(user.Username, "system:serviceaccount:") || !ok || len(names) != 1 || len(uids) != 1 {
		return tokenEntry{}, fmt.Errorf("%w: not a pod-bound service-account token", errUnauthenticated)
	}
	e = tokenEntry{ns: ns, pod: names[0], uid: types.UID(uids[0]), expires: now.Add(tokenCacheTTL)}
	p.mu.Lock()
	if len(p.tokens) >= tokenCacheMax {
		for k, v := range p.tokens {
			if !now.Before(v.expires) || len(p.tokens) >= tokenCacheMax {
				delete(p.tokens, k)
			}
		}
	}
	p.tokens[key] = e
	p.mu.Unlock()
	return e, nil
}

// stagePod reads the token's pod from the cache and checks that it is a stage pod: the uid the
// token is bound to, the run's labels, and a controlling Job that the run controls.
func (p *ProgressServer) stagePod(ctx context.Context, who tokenEntry) (*corev1.Pod, types.NamespacedName, error) {
	var none types.NamespacedName
	pod := &corev1.Pod{}
	if err := p.Reader.Get(ctx, client.ObjectKey{Namespace: who.ns, Name: who.pod}, pod); err != nil || pod.UID != who.uid {
		return nil, none, fmt.Errorf("pod %s/%s is not a stage pod of an AlignmentRun", who.ns, who.pod)
	}
	l := pod.Labels
	run := l[alignv1.LabelRun]
	job := metav1.GetControllerOf(pod)
	if run == "" || l[alignv1.LabelStage] == "" || l[alignv1.LabelPhase] == "" || job == nil || job.Kind != "Job" {
		return nil, none, fmt.Errorf("pod %s/%s is not a stage pod of an AlignmentRun", who.ns, who.pod)
	}
	j := &batchv1.Job{}
	if err := p.Reader.Get(ctx, client.ObjectKey{Namespace: who.ns, Name: job.Name}, j); err != nil || j.UID != job.UID {
		return nil, none, fmt.Errorf("pod %s/%s: its Job %s is not a stage Job of an AlignmentRun", who.ns, who.pod, job.Name)
	}
	if owner := metav1.GetControllerOf(j); owner == nil || owner.Kind != "AlignmentRun" || owner.Name != run {
		return nil, none, fmt.Errorf("pod %s/%s: its Job %s is not controlled by AlignmentRun %s", who.ns, who.pod, job.Name, run)
	}
	return pod, types.NamespacedName{Namespace: who.ns, Name: run}, nil
}

var metricName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// checkReport refuses what status could not show: negative or inconsistent counts, a
// non-finite number, too many metrics or a name that is not a short snake_case word.
func checkReport(r *alignv1.ProgressReport) error {
	switch {
	case r.Done < 0 || r.Total < 0 || r.Done > r.Total:
		return fmt.Errorf("done %d of total %d: want 0 <= done <= total", r.Done, r.Total)
	case r.ElapsedSeconds < 0 || math.IsNaN(r.ElapsedSeconds) || math.IsInf(r.ElapsedSeconds, 0):
		return fmt.Errorf("elapsedSeconds %v: want a finite number >= 0", r.ElapsedSeconds)
	case len(r.Metrics) > alignv1.MaxProgressMetrics:
		return fmt.Errorf("%d metrics: at most %d", len(r.Metrics), alignv1.MaxProgressMetrics)
	}
	for k, v := range r.Metrics {
		if !metricName.MatchString(k) {
			return fmt.Errorf("metric name %q: want [a-z][a-z0-9_]{0,31}", k)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("metric %s is %v: want a finite number", k, v)
		}
	}
	return nil
}

// store keeps the pod's report as the newest of its index, and asks for a reconcile of the run
// unless one was asked for within progressFoldInterval. Reports of another phase, stage or
// attempt than the ones kept replace them all: a run has one running stage.
func (p *ProgressServer) store(run types.NamespacedName, pod *corev1.Pod, rep alignv1.ProgressReport) {
	phase, _ := strconv.Atoi(pod.Labels[alignv1.LabelPhase])
	stage, attempt := pod.Labels[alignv1.LabelStage], pod.Labels[alignv1.LabelAttempt]
	index := completionIndex(pod, 0)
	now := p.now()
	p.mu.Lock()
	rp := p.runs[run]
	if rp == nil || rp.phase != int32(phase) || rp.stage != stage || rp.attempt != attempt {
		last := time.Time{}
		if rp != nil {
			last = rp.lastEnqueued
		}
		rp = &runProgress{phase: int32(phase), stage: stage, attempt: attempt, pods: map[int32]podProgress{}, lastEnqueued: last, delayed: rp != nil && rp.delayed}
		p.runs[run] = rp
	}
	rp.pods[index] = podProgress{report: rep, at: now}
	wait := progressFoldInterval - now.Sub(rp.lastEnqueued)
	switch {
	case wait <= 0:
		rp.lastEnqueued = now
		p.mu.Unlock()
		p.enqueue(run)
		return
	case !rp.delayed:
		// Too soon after the last fold: fold this report when the interval is over, unless a
		// later report does first.
		rp.delayed = true
		time.AfterFunc(wait, func() {
			p.mu.Lock()
			if cur := p.runs[run]; cur != nil {
				cur.delayed, cur.lastEnqueued = false, p.now()
			}
			p.mu.Unlock()
			p.enqueue(run)
		})
	}
	p.mu.Unlock()
}

func (p *ProgressServer) enqueue(run types.NamespacedName) {
	select {
	case p.events <- event.GenericEvent{Object: &alignv1.AlignmentRun{ObjectMeta: metav1.ObjectMeta{Namespace: run.Namespace, Name: run.Name}}}:
	default: // the queue is full: the next report asks again
	}
}

// StageProgress is status.stageProgress for a run whose current stage is (phase, stage): the
// fold of the reports kept for exactly that stage, nil when there are none. A run that is not
// running forgets its reports.
func (p *ProgressServer) StageProgress(run types.NamespacedName, st *alignv1.AlignmentRunStatus) *alignv1.StageProgress {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	rp := p.runs[run]
	if rp == nil {
		return nil
	}
	if st.State != alignv1.StateRunning {
		delete(p.runs, run)
		return nil
	}
	if rp.phase != st.Phase || rp.stage != st.Stage {
		return nil
	}
	return foldProgress(rp.phase, rp.stage, rp.pods, p.now())
}

// Forget drops a deleted run's reports.
func (p *ProgressServer) Forget(run types.NamespacedName) {
	if p == nil {
		return
	}
	p.mu.Lock()
	delete(p.runs, run)
	p.mu.Unlock()
}

// foldProgress sums the pods' reports (pure): done and total and the rates add up, the ETA is
// what is left at the summed rate, each metric is the mean over the pods that report it.
// Reports older than progressStale are left out.
func foldProgress(phase int32, stage string, pods map[int32]podProgress, now time.Time) *alignv1.StageProgress {
	sp := &alignv1.StageProgress{Phase: phase, Stage: stage}
	var rate float64
	var updated time.Time
	sums, counts := map[string]float64{}, map[string]int{}
	for _, pp := range pods {
		if now.Sub(pp.at) > progressStale {
			continue
		}
		r := pp.report
		sp.Pods++
		sp.Done += r.Done
		sp.Total += r.Total
		if r.ElapsedSeconds > 0 {
			rate += float64(r.Done) / r.ElapsedSeconds
		}
		for k, v := range r.Metrics {
			sums[k] += v
			counts[k]++
		}
		if pp.at.After(updated) {
			updated = pp.at
		}
	}
	if sp.Pods == 0 {
		return nil
	}
	if sp.Total > 0 {
		sp.Percent = int32(100 * sp.Done / sp.Total)
	}
	if rate > 0 {
		sp.Rate = formatMetric(rate)
		left := time.Duration(float64(sp.Total-sp.Done) / rate * float64(time.Second))
		sp.ETA = left.Round(time.Second).String()
	}
	for k, s := range sums {
		if len(sp.Metrics) == alignv1.MaxProgressMetrics {
			break
		}
		if sp.Metrics == nil {
			sp.Metrics = map[string]string{}
		}
		sp.Metrics[k] = formatMetric(s / float64(counts[k]))
	}
	t := metav1.NewTime(updated.Truncate(time.Second))
	sp.UpdateTime = &t
	return sp
}

// progressEnv tells a stage pod where to report (contract.EnvProgressURL) and where its token is.
func progressEnv(url string) []corev1.EnvVar {
	return []corev1.EnvVar{
		{Name: contract.EnvProgressURL, Value: url},
		{Name: contract.EnvProgressTokenFile, Value: contract.ProgressTokenFile},
	}
}

// progressTokenVolume is the pod's progress token: a projected service-account token for our
// audience only, bound to the pod by the kubelet, renewed before it expires. It works with
// automountServiceAccountToken: false (the pod still has no API token).
func progressTokenVolume() (corev1.Volume, corev1.VolumeMount) {
	seconds := int64(contract.ProgressTokenSeconds)
	v := corev1.Volume{Name: "progress-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience: contract.ProgressAudience, ExpirationSeconds: &seconds, Path: "token",
		}}},
	}}}
	return v, corev1.VolumeMount{Name: "progress-token", MountPath: contract.ProgressTokenDir, ReadOnly: true}
}
