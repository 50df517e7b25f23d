package controllers

import (
	"fmt"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// stageInputs is everything decideStage looks at: one stage of one phase, the run's status as
// computed so far in this reconcile, the run's Jobs and the pods of the stage's current Job
// (currentJob), the time, and the settings that bound retries and waits.
type stageInputs struct {
	Phase, Phases int32
	Stage         string
	Status        *alignv1.AlignmentRunStatus // read only
	Jobs          []*batchv1.Job              // the run's Jobs, any phase and stage
	Pods          []corev1.Pod                // the pods of the current Job
	Now           time.Time
	BackoffLimit  int32         // spec.backoffLimit: retries after the first attempt
	ResultsGrace  time.Duration // how long a complete Job waits for its StageResults
}

// actionKind is what reconcileStage does with a stage.
type actionKind string

const (
	// actCreate creates the Job of attempt Attempt.
	actCreate actionKind = "Create"
	// actRunning: the Job runs and nothing holds it; Running=True with Message.
	actRunning actionKind = "Running"
	// actWait: Running=True with Message, and look again after RequeueAfter.
	actWait actionKind = "Wait"
	// actHeld: the Job is queued or its pods cannot start; Running=True with Reason and Message.
	actHeld actionKind = "Held"
	// actComplete folds Results into the phase and marks the stage completed.
	actComplete actionKind = "Complete"
	// actRetry creates the Job of attempt Attempt after the previous one failed.
	actRetry actionKind = "Retry"
	// actFail fails the run with Reason and Message.
	actFail actionKind = "Fail"
)

// stageEvent is an event about the stage's current Job.
type stageEvent struct {
	Type, Reason, Action, Note string
	// OnCreate: emitted only when this reconcile creates the action's Job, and then even if the
	// status write conflicts (the next reconcile finds the Job and has nothing left to report).
	OnCreate bool
}

// action is decideStage's answer.
type action struct {
	Kind actionKind
	// Attempt is the stage's attempt after the action (status.retries): the one to create
	// (actCreate, actRetry) or the current Job's.
	Attempt int32
	// Job names the current Job the action is about ("" when there is none).
	Job string
	// Reason and Message: of the Running condition (actRunning, actWait, actHeld) or the
	// Failed one (actFail).
	Reason, Message string
	RequeueAfter    time.Duration
	// Results are the StageResults by completion index (actComplete).
	Results map[int32]alignv1.StageResult
	// Events to emit, in order, with the current Job as the related object.
	Events []stageEvent
}

const (
	// resultsPoll and deletedJobPoll are how often a stage waiting for something the
	// controller does not watch directly looks again.
	resultsPoll    = 2 * time.Second
	deletedJobPoll = time.Second
)

// currentJob is the stage's attempt in progress and its Job: the attempt from the status when it
// tracks this stage (a Job deleted by suspend is recreated under the same attempt), or the newest
// Job's if the status lags. job is nil when that attempt has no live Job; deleting reports a Job
// of the stage that is still being deleted.
func currentJob(st *alignv1.AlignmentRunStatus, all []*batchv1.Job, k int32, stage string) (attempt int32, job *batchv1.Job, deleting bool) {
	if st.Phase == k && st.Stage == stage {
		attempt = st.Retries
	}
	jobs := map[int32]*batchv1.Job{}
	for _, j := range all {
		l := j.Labels
		if l[alignv1.LabelPhase] != strconv.Itoa(int(k)) || l[alignv1.LabelStage] != stage {
			continue
		}
		a, err := strconv.Atoi(l[alignv1.LabelAttempt])
		if err != nil {
			continue
		}
		if !j.DeletionTimestamp.IsZero() {
			deleting = true
			continue
		}
		jobs[int32(a)] = j
		attempt = max(attempt, int32(a))
	}
	return attempt, jobs[attempt], deleting
}

// stageWhere names a stage in messages and events: "phase k/F stage s".
func stageWhere(k, phases int32, stage string) string {
	return fmt.Sprintf("phase %d/%d stage %s", k, phases, stage)
}

// decideStage decides what to do next with one stage, from what is known now; it does no I/O.
func decideStage(in stageInputs) action {
	attempt, job, deleting := currentJob(in.Status, in.Jobs, in.Phase, in.Stage)
	where := stageWhere(in.Phase, in.Phases, in.Stage)
	a := action{Attempt: attempt}
	if job == nil {
		if deleting {
			// An old Job of this stage is going away; create the next one after it is gone.
			a.Kind, a.Reason, a.RequeueAfter = actWait, alignv1.ReasonStageRunning, deletedJobPoll
			a.Message = where + ": waiting for a deleted Job to go away"
			return a
		}
		a.Kind = actCreate
		return a
	}
	a.Job = job.Name

	switch {
	case jobComplete(job):
		results, bad := stageResults(in.Pods)
		want := int(*job.Spec.Completions)
		if len(results) >= want {
			a.Kind, a.Results = actComplete, results
			return a
		}
		if in.Now.Sub(jobFinishTime(job, batchv1.JobComplete)) < in.ResultsGrace {
			// The pods' terminated states may reach the cache after the Job's Complete condition.
			a.Kind, a.Reason, a.RequeueAfter = actWait, alignv1.ReasonStageRunning, resultsPoll
			a.Message = fmt.Sprintf("%s: Job %s complete, waiting for StageResults (%d of %d)", where, job.Name, len(results), want)
			return a
		}
		// Counting the stage as done with what is there would record a phase with missing
		// counts; the stage is idempotent, so another attempt reports every shard again.
		msg := fmt.Sprintf("Job %s completed but only %d of %d pods left a valid StageResult in their termination message (%d unreadable or invalid)", job.Name, len(results), want, bad)
		a.Events = append(a.Events, stageEvent{Type: corev1.EventTypeWarning, Reason: "StageResultsIncomplete", Action: "ReadResults", Note: where + ": " + msg})
		return retryOrFail(a, where, in.BackoffLimit, msg)

	case jobFailed(job):
		// failureMessage sorts the pods it is given; the inputs stay as they are.
		msg, fromPod := failureMessage(job, append([]corev1.Pod(nil), in.Pods...))
		if !fromPod && in.Now.Sub(jobFinishTime(job, batchv1.JobFailed)) < min(in.ResultsGrace, failureMessageGrace) {
			// As for results: the pod's terminated state (the stage's own error) may reach the
			// cache after the Job's Failed condition; wait for it a little before settling for
			// the Job's generic message (briefly: a deleted pod never shows one).
			a.Kind, a.Reason, a.RequeueAfter = actWait, alignv1.ReasonStageRunning, resultsPoll
			a.Message = fmt.Sprintf("%s: Job %s failed, waiting for the failed pod's message", where, job.Name)
			return a
		}
		return retryOrFail(a, where, in.BackoffLimit, msg)

	default:
		reason, hold := jobHold(job, in.Pods)
		if hold == "" {
			a.Kind, a.Reason = actRunning, alignv1.ReasonStageRunning
			a.Message = fmt.Sprintf("%s running (Job %s)", where, job.Name)
			return a
		}
		a.Kind, a.Reason, a.Message = actHeld, reason, where+": "+hold
		// Reported when the hold starts or changes, not on every reconcile it lasts.
		if r, m := runningCondition(in.Status); r != reason || m != truncate(a.Message, 1024) {
			eventType := corev1.EventTypeWarning
			if reason == alignv1.ReasonStageQueued {
				eventType = corev1.EventTypeNormal
			}
			a.Events = append(a.Events, stageEvent{Type: eventType, Reason: reason, Action: "WaitForStage", Note: a.Message})
		}
		return a
	}
}

// retryOrFail turns a failed attempt (a.Attempt, failed with msg) into the next attempt, or into
// the run's failure once limit retries are used.
func retryOrFail(a action, where string, limit int32, msg string) action {
	attempt := a.Attempt
	if attempt < limit {
		a.Kind, a.Attempt = actRetry, attempt+1
		a.Events = append(a.Events, stageEvent{Type: corev1.EventTypeWarning, Reason: "StageRetry", Action: "RetryStage", OnCreate: true,
			Note: fmt.Sprintf("%s attempt %d failed (%s); retrying (%d of %d retries)", where, attempt, msg, attempt+1, limit)})
		return a
	}
	a.Kind, a.Reason = actFail, alignv1.ReasonStageFailed
	a.Message = fmt.Sprintf("%s failed after %d attempts (backoffLimit %d): %s", where, attempt+1, limit, msg)
	a.Events = append(a.Events, stageEvent{Type: corev1.EventTypeWarning, Reason: alignv1.ReasonStageFailed, Action: "Fail", Note: a.Message})
	return a
}
