// Package controllers holds the AlignmentRun controller: a thin reconciler that runs every
// stage (sample → label → train → eval) of every phase of a run as an Indexed batch/v1 Job,
// following the stage contract of docs/design.md.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

const (
	// ControllerName names the controller and is the reportingController of its events.
	ControllerName = "alignment.bpo.dev/alignmentrun-controller"

	// defaultResultsGracePeriod is how long after a Job completed the controller waits for the
	// pods' StageResults to appear in its cache before folding what it has.
	defaultResultsGracePeriod = 30 * time.Second

	// failureMessageGrace bounds how long a failed Job waits for its failed pod's message to
	// reach the cache (cache lag is milliseconds; a deleted pod never shows one).
	failureMessageGrace = 5 * time.Second
)

// AlignmentRunReconciler reconciles AlignmentRun objects.
type AlignmentRunReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder events.EventRecorder

	// StageImage and StageImagePullPolicy apply to stages whose spec sets no image / policy.
	StageImage           string
	StageImagePullPolicy corev1.PullPolicy

	// Policy is what runs may change about their stage pods (image, command, Secret env).
	Policy StagePolicy

	// StageResources are merged into every stage container's resources, per resource, where
	// the stage sets none (stageResources); the manager passes DefaultStageResources or its
	// --stage-*-request/limit flags. Empty: the stage's own resources only.
	StageResources corev1.ResourceRequirements

	// ResultsGracePeriod: see defaultResultsGracePeriod (0 means the default).
	ResultsGracePeriod time.Duration
	// MaxConcurrentReconciles of the controller (0 means 1).
	MaxConcurrentReconciles int
	// Now returns the current time (tests may override it); nil means time.Now.
	Now func() time.Time

	// ProgressURL is what stage pods post their live progress to (the manager's progress
	// endpoint as the pods reach it); empty: pods are given no endpoint and report nothing.
	ProgressURL string
	// Progress holds the pods' reports; nil: status.stageProgress stays empty.
	Progress *ProgressServer

	// APIReader reads objects that the label-scoped cache cannot see (a squatter without our
	// labels); SetupWithManager sets the manager's, nil means Client.
	APIReader client.Reader

	// statusBlocked holds the runs (ObjectKey -> error text) whose last status write failed for
	// another reason than a conflict: until one succeeds, no Job is started for them, so progress
	// never runs ahead of what status records.
	statusBlocked sync.Map
}

// +kubebuilder:rbac:groups=alignment.bpo.dev,resources=alignmentruns,verbs=get;list;watch
// +kubebuilder:rbac:groups=alignment.bpo.dev,resources=alignmentruns/status,verbs=get;patch
// +kubebuilder:rbac:groups=alignment.bpo.dev,resources=alignmentruns/finalizers,verbs=update
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// CacheOptions restricts the manager's informer cache to what the controller needs: Jobs, Pods
// and ConfigMaps only when they carry the alignment.bpo.dev/run label (the controller never
// reads other ones), and, when namespaces is non-empty, only those namespaces.
func CacheOptions(namespaces []string) cache.Options {
	req, err := labels.NewRequirement(alignv1.LabelRun, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant, valid label key
	}
	owned := cache.ByObject{Label: labels.NewSelector().Add(*req)}
	opts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&batchv1.Job{}:      owned,
		&corev1.Pod{}:       owned,
		&corev1.ConfigMap{}: owned,
	},
		// managedFields are never read here and are a large share of every cached object
		// (make bench-operator: the manager's memory with 1,000 runs).
		DefaultTransform: cache.TransformStripManagedFields(),
	}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// SetupWithManager registers the controller: AlignmentRuns, the Jobs and ConfigMaps they own,
// and stage pods that terminate or cannot start.
func (r *AlignmentRunReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder(ControllerName)
	}
	if r.StageImage == "" {
		r.StageImage = DefaultStageImage
	}
	if r.StageImagePullPolicy == "" {
		r.StageImagePullPolicy = corev1.PullIfNotPresent
	}
	// Pods matter when they terminate (their termination messages carry the StageResults) and
	// when they start or stop being held (unschedulable, image pull, config errors).
	terminated := func(o client.Object) bool {
		pod, ok := o.(*corev1.Pod)
		return ok && (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed)
	}
	hold := func(o client.Object) string {
		if pod, ok := o.(*corev1.Pod); ok {
			return podHold(pod)
		}
		return ""
	}
	podEvents := predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return terminated(e.Object) || hold(e.Object) != "" },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return terminated(e.ObjectNew) || hold(e.ObjectOld) != hold(e.ObjectNew)
		},
		DeleteFunc:  func(e event.DeleteEvent) bool { return hold(e.Object) != "" },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("alignmentrun").
		For(&alignv1.AlignmentRun{}).
		Owns(&batchv1.Job{}).
		Owns(&corev1.ConfigMap{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToRun), builder.WithPredicates(podEvents)).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1),
			SkipNameValidation:      ptr.To(true),
		})
	if r.Progress != nil {
		// Runs whose pods reported progress (at most every progressFoldInterval per run).
		b = b.WatchesRawSource(source.Channel(r.Progress.Events(), &handler.EnqueueRequestForObject{}))
	}
	return b.Complete(r)
}

func podToRun(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[alignv1.LabelRun]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// scope carries one reconcile's state: the run as read, the working copy whose status is
// computed in memory, the children, and what to report once the status is written.
type scope struct {
	orig *alignv1.AlignmentRun
	run  *alignv1.AlignmentRun
	now  metav1.Time
	jobs []*batchv1.Job // Jobs controlled by the run

	requeueAfter time.Duration
	events       []pendingEvent
	stageDone    []stageObservation
	retried      []string
	phasesDone   int
}

type pendingEvent struct {
	eventType, reason, action, note string
	related                         runtime.Object
	// done marks an event that records an API action that already happened (a Job created):
	// it is emitted even when the status write conflicts, because the next reconcile finds
	// the Job and has nothing left to report.
	done bool
}

type stageObservation struct {
	stage    string
	duration time.Duration
}

func (s *scope) requeue(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if s.requeueAfter == 0 || d < s.requeueAfter {
		s.requeueAfter = d
	}
}

func (s *scope) event(eventType, reason, action string, related runtime.Object, format string, args ...any) {
	s.events = append(s.events, pendingEvent{eventType, reason, action, truncate(fmt.Sprintf(format, args...), 900), related, false})
}

// actionEvent is event for an API action that has already taken effect (see pendingEvent.done).
func (s *scope) actionEvent(eventType, reason, action string, related runtime.Object, format string, args ...any) {
	s.event(eventType, reason, action, related, format, args...)
	s.events[len(s.events)-1].done = true
}

// Reconcile runs fetch → validate → lifecycle (finished/TTL, suspend, deadline) → spec
// ConfigMap → stages, computing the status in memory; then writes the status once (if it
// changed) and only then emits events and records metrics.
func (r *AlignmentRunReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	run := &alignv1.AlignmentRun{}
	if err := r.Get(ctx, req.NamespacedName, run); err != nil {
		if apierrors.IsNotFound(err) {
			tracker.forget(req.NamespacedName)
			r.Progress.Forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !run.DeletionTimestamp.IsZero() {
		// Children carry controller owner references: the garbage collector deletes them.
		return ctrl.Result{}, nil
	}

	s := &scope{orig: run, run: run.DeepCopy(), now: metav1.NewTime(r.now())}
	err := r.reconcile(ctx, s)
	if err == nil {
		s.run.Status.ObservedGeneration = run.Generation
		for i := range s.run.Status.Conditions {
			s.run.Status.Conditions[i].ObservedGeneration = run.Generation
		}
	}
	// Derived from the conditions as they will be written, in the same status write.
	s.run.Status.State = alignv1.StateOf(s.run.Status.Conditions)
	// The running stage's live progress, as its pods last reported it (none once it ended).
	s.run.Status.StageProgress = r.Progress.StageProgress(req.NamespacedName, &s.run.Status)
	if !equality.Semantic.DeepEqual(run.Status, s.run.Status) {
		patch := client.MergeFromWithOptions(run, client.MergeFromWithOptimisticLock{})
		if perr := r.Status().Patch(ctx, s.run, patch); perr != nil {
			if apierrors.IsConflict(perr) || apierrors.IsNotFound(perr) {
				// A newer version exists; its watch event reconciles again. Events are dropped
				// with the stale status (the next reconcile recomputes both), except those of
				// actions that already happened, which the next reconcile cannot see again.
				for _, e := range s.events {
					if e.done {
						r.Recorder.Eventf(run, e.related, e.eventType, e.reason, e.action, "%s", e.note)
					}
				}
				for _, st := range s.retried {
					stageRetries.WithLabelValues(st).Inc()
				}
				log.V(1).Info("status write conflicted, requeueing", "error", perr.Error())
				return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
			}
			r.statusBlocked.Store(req.NamespacedName, perr.Error())
			r.Recorder.Eventf(run, nil, corev1.EventTypeWarning, "StatusWriteFailed", "WriteStatus",
				"status could not be written (%s); no stage Job starts until it can", truncate(perr.Error(), 512))
			return ctrl.Result{}, errors.Join(err, perr)
		}
	}
	r.statusBlocked.Delete(req.NamespacedName)
	r.report(s)
	tracker.set(req.NamespacedName, sampleRun(&s.run.Status))
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: s.requeueAfter}, nil
}

// reconcile runs the phase functions in order until one stops the pipeline or fails.
func (r *AlignmentRunReconciler) reconcile(ctx context.Context, s *scope) error {
	if err := r.listJobs(ctx, s); err != nil {
		return err
	}
	initConditions(s)
	for _, phase := range []func(context.Context, *scope) (stop bool, err error){
		r.reconcileFinished,
		r.reconcileValidation,
		r.reconcileSuspend,
		r.reconcileDeadline,
		r.reconcileSpecConfigMap,
		r.reconcileStages,
	} {
		if stop, err := phase(ctx, s); err != nil || stop {
			return err
		}
	}
	return nil
}

// report emits the queued events and records metrics, after the status write.
func (r *AlignmentRunReconciler) report(s *scope) {
	for _, e := range s.events {
		r.Recorder.Eventf(s.run, e.related, e.eventType, e.reason, e.action, "%s", e.note)
	}
	for _, o := range s.stageDone {
		stageDuration.WithLabelValues(o.stage).Observe(o.duration.Seconds())
	}
	for _, st := range s.retried {
		stageRetries.WithLabelValues(st).Inc()
	}
	if s.phasesDone > 0 {
		phasesCompleted.WithLabelValues(string(s.run.Spec.Loss.Type), string(s.run.Spec.TrustRegion.Reference)).Add(float64(s.phasesDone))
	}
}

func (r *AlignmentRunReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *AlignmentRunReconciler) resultsGrace() time.Duration {
	if r.ResultsGracePeriod > 0 {
		return r.ResultsGracePeriod
	}
	return defaultResultsGracePeriod
}

// listJobs loads the Jobs controlled by the run (a Job with the run label but another owner,
// e.g. left by a deleted run of the same name, is ignored).
func (r *AlignmentRunReconciler) listJobs(ctx context.Context, s *scope) error {
	var list batchv1.JobList
	if err := r.List(ctx, &list, client.InNamespace(s.run.Namespace), client.MatchingLabels{alignv1.LabelRun: s.run.Name}); err != nil {
		return fmt.Errorf("listing Jobs: %w", err)
	}
	s.jobs = s.jobs[:0]
	for i := range list.Items {
		if metav1.IsControlledBy(&list.Items[i], s.run) {
			s.jobs = append(s.jobs, &list.Items[i])
		}
	}
	return nil
}

// ---- phase: finished runs and ttlSecondsAfterFinished ----

func (r *AlignmentRunReconciler) reconcileFinished(ctx context.Context, s *scope) (bool, error) {
	st := &s.run.Status
	if !isTrue(st, alignv1.ConditionSucceeded) && !isTrue(st, alignv1.ConditionFailed) {
		return false, nil
	}
	// Nothing keeps running once the run is finished (e.g. after a deadline).
	if _, err := r.deleteJobs(ctx, s, true); err != nil {
		return true, err
	}
	ttl := s.run.Spec.TTLSecondsAfterFinished
	if ttl == nil || st.CompletionTime == nil {
		return true, nil
	}
	expiry := st.CompletionTime.Add(time.Duration(*ttl) * time.Second)
	if s.now.Time.Before(expiry) {
		s.requeue(expiry.Sub(s.now.Time))
		return true, nil
	}
	n, err := r.deleteJobs(ctx, s, false)
	if err != nil {
		return true, err
	}
	cm := &corev1.ConfigMap{}
	cmDeleted := false
	if err := r.Get(ctx, types.NamespacedName{Namespace: s.run.Namespace, Name: ConfigMapName(s.run.Name)}, cm); err == nil {
		if metav1.IsControlledBy(cm, s.run) {
			if err := r.Delete(ctx, cm); client.IgnoreNotFound(err) != nil {
				return true, err
			}
			cmDeleted = true
		}
	} else if !apierrors.IsNotFound(err) {
		return true, err
	}
	if n > 0 || cmDeleted {
		s.event(corev1.EventTypeNormal, "ChildrenDeleted", "DeleteChildren", nil,
			"ttlSecondsAfterFinished (%ds) passed: deleted %d Jobs and the spec ConfigMap; the run and its status are kept", *ttl, n)
	}
	return true, nil
}

// ---- phase: validation ----

func (r *AlignmentRunReconciler) reconcileValidation(ctx context.Context, s *scope) (bool, error) {
	if errs := s.run.Validate(); len(errs) > 0 {
		msg := errs.ToAggregate().Error()
		s.event(corev1.EventTypeWarning, alignv1.ReasonInvalidSpec, "Validate", nil, "%s", msg)
		return true, r.fail(ctx, s, alignv1.ReasonInvalidSpec, "invalid spec: "+msg)
	}
	if errs := r.Policy.Check(&s.run.Spec, r.StageImage); len(errs) > 0 {
		msg := errs.ToAggregate().Error()
		s.event(corev1.EventTypeWarning, alignv1.ReasonPolicyViolation, "CheckPolicy", nil, "%s", msg)
		return true, r.fail(ctx, s, alignv1.ReasonPolicyViolation, "stage policy: "+msg)
	}
	s.run.Status.Phases = s.run.Spec.TrustRegion.Phases
	if s.run.Status.Phase == 0 {
		s.run.Status.Phase = 1
	}
	s.run.Status.Progress = fmt.Sprintf("%d/%d", s.run.Status.Phase, s.run.Status.Phases)
	return false, nil
}

// ---- phase: suspend / resume ----

func (r *AlignmentRunReconciler) reconcileSuspend(ctx context.Context, s *scope) (bool, error) {
	st := &s.run.Status
	wasSuspended := isTrue(st, alignv1.ConditionSuspended)
	if s.run.Spec.IsSuspended() {
		// Resume recreates the stage under the attempt status records: record the attempt of
		// the Job about to be deleted first (a retry whose status write conflicted is known only
		// from its Job), and delete it once that status is written.
		if k, stage, attempt, ok := inFlight(s.jobs); ok {
			o := &s.orig.Status
			if o.Phase != k || o.Stage != stage || o.Retries != attempt {
				trackStage(st, k, s.run.Spec.TrustRegion.Phases, stage, attempt)
				setState(s, suspendedState(fmt.Sprintf("spec.suspend is true: suspending at phase %d/%d stage %s", k, st.Phases, stage)))
				s.requeue(100 * time.Millisecond)
				return true, nil
			}
		}
		n, err := r.deleteJobs(ctx, s, true)
		if err != nil {
			return true, err
		}
		where := "before start"
		if st.StartTime != nil {
			where = fmt.Sprintf("at phase %d/%d stage %s", st.Phase, st.Phases, st.Stage)
		}
		msg := fmt.Sprintf("spec.suspend is true: suspended %s", where)
		setState(s, suspendedState(msg))
		if !wasSuspended || n > 0 {
			s.event(corev1.EventTypeNormal, alignv1.ReasonSuspended, "Suspend", nil, "%s; deleted %d running Jobs", msg, n)
		}
		return true, nil
	}
	if wasSuspended {
		msg := fmt.Sprintf("spec.suspend is false: resumed at phase %d/%d stage %s", st.Phase, st.Phases, st.Stage)
		setState(s, resumedState(msg))
		s.event(corev1.EventTypeNormal, alignv1.ReasonResumed, "Resume", nil, "%s", msg)
	}
	if st.StartTime == nil {
		st.StartTime = s.now.DeepCopy()
		st.StageContract = stageContractVersion
	}
	return false, nil
}

// ---- phase: activeDeadlineSeconds ----

func (r *AlignmentRunReconciler) reconcileDeadline(ctx context.Context, s *scope) (bool, error) {
	ads := s.run.Spec.ActiveDeadlineSeconds
	st := &s.run.Status
	if ads == nil || st.StartTime == nil {
		return false, nil
	}
	// Counted from the start, or from the last resume (like TrainJob).
	base := st.StartTime.Time
	if c := meta.FindStatusCondition(st.Conditions, alignv1.ConditionSuspended); c != nil &&
		c.Status == metav1.ConditionFalse && c.Reason == alignv1.ReasonResumed && c.LastTransitionTime.After(base) {
		base = c.LastTransitionTime.Time
	}
	deadline := base.Add(time.Duration(*ads) * time.Second)
	if s.now.Time.Before(deadline) {
		s.requeue(deadline.Sub(s.now.Time))
		return false, nil
	}
	msg := fmt.Sprintf("activeDeadlineSeconds (%d) exceeded at phase %d/%d stage %s", *ads, st.Phase, st.Phases, st.Stage)
	s.event(corev1.EventTypeWarning, alignv1.ReasonDeadlineExceeded, "Fail", nil, "%s", msg)
	return true, r.fail(ctx, s, alignv1.ReasonDeadlineExceeded, msg)
}

// ---- phase: the spec ConfigMap ----

func (r *AlignmentRunReconciler) reconcileSpecConfigMap(ctx context.Context, s *scope) (bool, error) {
	desired, err := buildConfigMap(s.run)
	if err != nil {
		return true, err
	}
	if err := controllerutil.SetControllerReference(s.run, desired, r.Scheme); err != nil {
		return true, err
	}
	existing := &corev1.ConfigMap{}
	err = r.Get(ctx, client.ObjectKeyFromObject(desired), existing)
	switch {
	case apierrors.IsNotFound(err):
		err := r.Create(ctx, desired)
		if apierrors.IsAlreadyExists(err) {
			// Not in the label-scoped cache but there: ours not yet seen, or a squatter whose
			// run.yaml the stage pods would mount. Read it from the API server to tell.
			if conflict, err := r.nameConflict(ctx, s, existing, client.ObjectKeyFromObject(desired)); conflict || err != nil {
				return true, err
			}
			return false, nil
		}
		if err != nil {
			return true, fmt.Errorf("creating ConfigMap %s: %w", desired.Name, err)
		}
		return false, nil
	case err != nil:
		return true, err
	case !metav1.IsControlledBy(existing, s.run):
		_, err := r.nameConflict(ctx, s, existing, client.ObjectKeyFromObject(desired))
		return true, err
	case !equality.Semantic.DeepEqual(existing.Data, desired.Data):
		existing.Data = desired.Data
		if err := r.Update(ctx, existing); err != nil {
			return true, fmt.Errorf("updating ConfigMap %s: %w", desired.Name, err)
		}
	}
	return false, nil
}

// ---- phase: the stages ----

// reconcileStages walks phases k = 1..F and their stages in order. Completed stages are known
// from status.phaseResults[].completedStages, or from a complete Job when the status has not
// caught up; the first stage not completed is advanced by reconcileStage.
func (r *AlignmentRunReconciler) reconcileStages(ctx context.Context, s *scope) (bool, error) {
	spec := &s.run.Spec
	st := &s.run.Status
	for k := firstPhase(spec, st); k <= spec.TrustRegion.Phases; k++ {
		for _, stage := range spec.Stages(k) {
			if pr := phaseResult(st, k, false); pr != nil && pr.HasCompleted(stage) {
				continue
			}
			done, err := r.reconcileStage(ctx, s, k, stage)
			if err != nil || !done {
				return true, err
			}
		}
		pr := phaseResult(st, k, true)
		if pr.CompletionTime == nil {
			pr.CompletionTime = s.now.DeepCopy()
			if pr.StartTime != nil {
				pr.DurationSeconds = int64(pr.CompletionTime.Sub(pr.StartTime.Time).Seconds())
			}
			if k > 0 {
				s.phasesDone++ // the baseline is not a data-collection phase
			}
			// Tied to this status change (completionTime): a conflicting write drops it with the
			// status and the next reconcile, which completes the phase again, queues it again;
			// once written, completionTime is set and the event is never queued again.
			s.event(corev1.EventTypeNormal, "PhaseCompleted", "CompletePhase", nil, "%s", phaseSummary(pr, spec.TrustRegion.Phases))
		}
	}
	st.CompletionTime = s.now.DeepCopy()
	msg := fmt.Sprintf("all %d phases completed; win rate %s; checkpoint %s", spec.TrustRegion.Phases, winRateChange(st), orDash(st.LatestCheckpoint))
	if st.Report != "" {
		msg += "; report " + st.Report
	}
	if st.Outputs != nil && st.Outputs.Policy != "" {
		msg += "; policy " + st.Outputs.Policy
	}
	setState(s, succeededState(msg))
	s.event(corev1.EventTypeNormal, alignv1.ReasonSucceeded, "Complete", nil, "%s", msg)
	return true, nil
}

// firstPhase is where the walk starts: spec.FirstPhase() (0, the baseline eval, by default),
// except for a run that started phase 1 without a baseline (created before the baseline
// existed): the walk does not go back.
func firstPhase(spec *alignv1.AlignmentRunSpec, st *alignv1.AlignmentRunStatus) int32 {
	if spec.FirstPhase() == 0 && len(st.PhaseResults) > 0 && phaseResult(st, 0, false) == nil {
		return 1
	}
	return spec.FirstPhase()
}

// winRateChange is "baseline -> latest" when the run has a baseline, else the latest win rate.
func winRateChange(st *alignv1.AlignmentRunStatus) string {
	if st.BaselineWinRate == "" {
		return orDash(st.LatestWinRate)
	}
	return st.BaselineWinRate + " -> " + orDash(st.LatestWinRate)
}

// reconcileStage advances one stage of phase k and reports whether it has completed: it reads
// what decideStage needs (the current Job's pods), lets it decide, and carries the action out.
func (r *AlignmentRunReconciler) reconcileStage(ctx context.Context, s *scope, k int32, stage string) (bool, error) {
	st := &s.run.Status
	F := s.run.Spec.TrustRegion.Phases
	in := stageInputs{
		Phase: k, Phases: F, Stage: stage, Status: st, Jobs: s.jobs, Now: s.now.Time,
		BackoffLimit: s.run.Spec.BackoffLimitOrDefault(), ResultsGrace: r.resultsGrace(),
	}
	_, job, _ := currentJob(st, s.jobs, k, stage)
	if job != nil {
		pods, err := r.jobPods(ctx, job)
		if err != nil {
			return false, err
		}
		in.Pods = pods
	}
	a := decideStage(in)

	trackStage(st, k, F, stage, a.Attempt)
	where := stageWhere(k, F, stage)
	var related runtime.Object
	if job != nil {
		related = job
	}
	onCreate := -1 // the index in s.events of the event that stands only if the Job is created
	for _, e := range a.Events {
		s.event(e.Type, e.Reason, e.Action, related, "%s", e.Note)
		if e.OnCreate {
			onCreate = len(s.events) - 1
		}
	}
	if a.RequeueAfter > 0 {
		s.requeue(a.RequeueAfter)
	}

	switch a.Kind {
	case actCreate:
		_, err := r.startJob(ctx, s, k, stage, a.Attempt, where)
		return false, err

	case actRunning, actWait, actHeld:
		setState(s, runningState(a.Reason, a.Message))
		return false, nil

	case actComplete:
		pr := phaseResult(st, k, true)
		foldResults(st, pr, stage, a.Results)
		pr.CompletedStages = append(pr.CompletedStages, stage)
		if pr.StartTime == nil {
			pr.StartTime = job.CreationTimestamp.DeepCopy()
		}
		st.Retries = 0
		if job.Status.StartTime != nil && job.Status.CompletionTime != nil {
			s.stageDone = append(s.stageDone, stageObservation{stage, job.Status.CompletionTime.Sub(job.Status.StartTime.Time)})
		}
		s.event(corev1.EventTypeNormal, "StageSucceeded", "CompleteStage", job, "%s succeeded (Job %s)%s", where, job.Name, stageSummary(pr, stage))
		return true, nil

	case actRetry:
		created, err := r.startJob(ctx, s, k, stage, a.Attempt, where)
		if onCreate >= 0 {
			if created {
				// The retry took effect with the Job's creation: it is reported (event and
				// metric) even if this reconcile's status write conflicts, because the next
				// reconcile finds the Job and has no failed attempt left to retry.
				s.events[onCreate].done = true
			} else {
				// Not retried now: either an earlier reconcile created the attempt (and
				// reported it) or the creation failed (the next reconcile tries again and
				// reports it then).
				s.events = append(s.events[:onCreate], s.events[onCreate+1:]...)
			}
		}
		if created {
			s.retried = append(s.retried, stage)
		}
		return false, err

	case actFail:
		return false, r.fail(ctx, s, a.Reason, a.Message)
	}
	return false, fmt.Errorf("%s: unknown stage action %q", where, a.Kind)
}

// nameConflict reads key from the API server (not the cache) into obj and, when the object is not
// controlled by the run, fails the run with reason NameConflict and an event: the operator never
// adopts or waits for an object it did not create.
func (r *AlignmentRunReconciler) nameConflict(ctx context.Context, s *scope, obj client.Object, key client.ObjectKey) (bool, error) {
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	if err := reader.Get(ctx, key, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil // gone again: the next reconcile creates it
		}
		return false, err
	}
	if metav1.IsControlledBy(obj, s.run) {
		return false, nil
	}
	kind := "ConfigMap"
	if _, ok := obj.(*batchv1.Job); ok {
		kind = "Job"
	}
	msg := fmt.Sprintf("%s %s/%s exists and is not controlled by this AlignmentRun; the operator does not adopt it: delete it or rename the run", kind, key.Namespace, key.Name)
	s.event(corev1.EventTypeWarning, alignv1.ReasonNameConflict, "CheckOwner", obj, "%s", msg)
	return true, r.fail(ctx, s, alignv1.ReasonNameConflict, msg)
}

// startJob creates attempt n of a stage Job (idempotently: the name is deterministic). It reports
// whether this call created the Job.
func (r *AlignmentRunReconciler) startJob(ctx context.Context, s *scope, k int32, stage string, attempt int32, where string) (created bool, err error) {
	if why, blocked := r.statusBlocked.Load(client.ObjectKeyFromObject(s.run)); blocked {
		// The last status write failed (not a conflict): a Job started now would go unrecorded.
		return false, fmt.Errorf("%s: not starting a Job while the run's status cannot be written: %v", where, why)
	}
	job := r.buildJob(s.run, k, stage, attempt)
	if err := controllerutil.SetControllerReference(s.run, job, r.Scheme); err != nil {
		return false, err
	}
	pr := phaseResult(&s.run.Status, k, true)
	if pr.StartTime == nil {
		pr.StartTime = s.now.DeepCopy()
	}
	err = r.Create(ctx, job)
	switch {
	case err == nil:
		s.actionEvent(corev1.EventTypeNormal, "StageStarted", "CreateJob", job, "%s started: Job %s (attempt %d, %d completions)",
			where, job.Name, attempt, *job.Spec.Completions)
	case apierrors.IsAlreadyExists(err):
		// Created by an earlier reconcile that the cache has not shown yet, or a squatter the
		// label-scoped cache cannot see (the run would wait for it forever).
		if conflict, err := r.nameConflict(ctx, s, &batchv1.Job{}, client.ObjectKeyFromObject(job)); conflict || err != nil {
			return false, err
		}
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		msg := fmt.Sprintf("%s: the API server rejected Job %s: %v", where, job.Name, err)
		s.event(corev1.EventTypeWarning, alignv1.ReasonJobCreationFailed, "CreateJob", nil, "%s", msg)
		return false, r.fail(ctx, s, alignv1.ReasonJobCreationFailed, msg)
	default:
		return false, fmt.Errorf("creating Job %s: %w", job.Name, err)
	}
	setState(s, runningState(alignv1.ReasonStageRunning, fmt.Sprintf("%s running (Job %s)", where, job.Name)))
	return err == nil, nil
}

// trackStage records the current stage and attempt of phase k of F in status.
func trackStage(st *alignv1.AlignmentRunStatus, k, phases int32, stage string, attempt int32) {
	st.Phase, st.Stage, st.Retries = k, stage, attempt
	st.Progress = fmt.Sprintf("%d/%d", k, phases)
}

// inFlight is the stage Job that runs (not finished, not being deleted), by its labels: the
// newest attempt when there are several.
func inFlight(jobs []*batchv1.Job) (k int32, stage string, attempt int32, ok bool) {
	for _, j := range jobs {
		if !j.DeletionTimestamp.IsZero() || jobFinished(j) {
			continue
		}
		p, err1 := strconv.Atoi(j.Labels[alignv1.LabelPhase])
		a, err2 := strconv.Atoi(j.Labels[alignv1.LabelAttempt])
		if err1 != nil || err2 != nil || j.Labels[alignv1.LabelStage] == "" || (ok && int32(a) < attempt) {
			continue
		}
		k, stage, attempt, ok = int32(p), j.Labels[alignv1.LabelStage], int32(a), true
	}
	return k, stage, attempt, ok
}

// deleteJobs deletes the run's Jobs (only the unfinished ones when activeOnly) with background
// propagation, so the garbage collector removes their pods. It returns how many it deleted.
func (r *AlignmentRunReconciler) deleteJobs(ctx context.Context, s *scope, activeOnly bool) (int, error) {
	n := 0
	for _, j := range s.jobs {
		if !j.DeletionTimestamp.IsZero() || (activeOnly && jobFinished(j)) {
			continue
		}
		if err := r.Delete(ctx, j, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return n, fmt.Errorf("deleting Job %s: %w", j.Name, err)
		}
		now := s.now
		j.DeletionTimestamp = &now // so later phases of this reconcile treat it as gone
		n++
	}
	return n, nil
}

// fail marks the run Failed (terminal) and stops whatever still runs.
func (r *AlignmentRunReconciler) fail(ctx context.Context, s *scope, reason, msg string) error {
	st := &s.run.Status
	if st.CompletionTime == nil {
		st.CompletionTime = s.now.DeepCopy()
	}
	setState(s, failedState(reason, msg))
	_, err := r.deleteJobs(ctx, s, true)
	return err
}

// ---- helpers ----

// phaseResult returns the status entry of phase k, adding it when create is set.
func phaseResult(st *alignv1.AlignmentRunStatus, k int32, create bool) *alignv1.PhaseResult {
	for i := range st.PhaseResults {
		if st.PhaseResults[i].Phase == k {
			return &st.PhaseResults[i]
		}
	}
	if !create {
		return nil
	}
	st.PhaseResults = append(st.PhaseResults, alignv1.PhaseResult{Phase: k})
	return &st.PhaseResults[len(st.PhaseResults)-1]
}

func jobFinishTime(job *batchv1.Job, t batchv1.JobConditionType) time.Time {
	if job.Status.CompletionTime != nil {
		return job.Status.CompletionTime.Time
	}
	if c := jobCondition(job, t); c != nil {
		return c.LastTransitionTime.Time
	}
	return job.CreationTimestamp.Time
}

func stageSummary(pr *alignv1.PhaseResult, stage string) string {
	switch stage {
	case alignv1.StageSample:
		return fmt.Sprintf(": %d samples, %d candidate pairs, %d identical", pr.Samples, pr.PairsSampled, pr.Identical)
	case alignv1.StageLabel:
		return fmt.Sprintf(": %d pairs kept, %d ties", pr.PairsKept, pr.Ties)
	case alignv1.StageTrain:
		return fmt.Sprintf(": loss %s, reward accuracy %s, KL to reference %s", orDash(pr.Loss), orDash(pr.RewardAccuracy), orDash(pr.KLToReference))
	case alignv1.StageReport, alignv1.StageExport:
		return ""
	default:
		return fmt.Sprintf(": win rate %s, gold reward %s", orDash(pr.WinRate), orDash(pr.GoldReward))
	}
}

// phaseSummary is the one-line note of a PhaseCompleted event: the phase's numbers, with the
// win rate only when the phase was evaluated.
func phaseSummary(pr *alignv1.PhaseResult, phases int32) string {
	if pr.Phase == 0 {
		return fmt.Sprintf("baseline (the initial model) evaluated: win rate %s, gold reward %s, mean length %s",
			orDash(pr.WinRate), orDash(pr.GoldReward), orDash(pr.MeanLength))
	}
	msg := fmt.Sprintf("phase %d/%d completed: %d pairs kept, %d ties, loss %s, reward accuracy %s, KL to reference %s, KL to initial %s",
		pr.Phase, phases, pr.PairsKept, pr.Ties, orDash(pr.Loss), orDash(pr.RewardAccuracy), orDash(pr.KLToReference), orDash(pr.KLToInitial))
	if pr.HasCompleted(alignv1.StageEval) {
		msg += ", win rate " + orDash(pr.WinRate)
	}
	return msg
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
