package controllers

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// t0 is "now" in the decideStage tables.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// stageJob is a Job of the label stage of phase 1 (attempt n, 2 completions), created 10 minutes
// before t0, changed by opts.
func stageJob(stage string, n int32, opts ...func(*batchv1.Job)) *batchv1.Job {
	j := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name: JobName("r", 1, stage, n), Namespace: "ns",
			CreationTimestamp: metav1.NewTime(t0.Add(-10 * time.Minute)),
			Labels: map[string]string{
				alignv1.LabelRun: "r", alignv1.LabelPhase: "1", alignv1.LabelStage: stage,
				alignv1.LabelAttempt: strconv.Itoa(int(n)),
			},
		},
		Spec: batchv1.JobSpec{Completions: ptr.To(int32(2))},
	}
	for _, o := range opts {
		o(j)
	}
	return j
}

// completedAt marks a Job Complete at t (the Job controller sets completionTime then).
func completedAt(t time.Time) func(*batchv1.Job) {
	return func(j *batchv1.Job) {
		j.Status.Conditions = append(j.Status.Conditions, batchv1.JobCondition{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(t)})
		j.Status.StartTime, j.Status.CompletionTime = ptr.To(metav1.NewTime(t.Add(-time.Minute))), ptr.To(metav1.NewTime(t))
	}
}

// failedAt marks a Job Failed at t with the Job controller's reason and message.
func failedAt(t time.Time, reason, msg string) func(*batchv1.Job) {
	return func(j *batchv1.Job) {
		j.Status.Conditions = append(j.Status.Conditions, batchv1.JobCondition{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: reason, Message: msg, LastTransitionTime: metav1.NewTime(t)})
	}
}

func beingDeleted(j *batchv1.Job) { j.DeletionTimestamp = ptr.To(metav1.NewTime(t0.Add(-time.Second))) }

func suspendedJob(queue string) func(*batchv1.Job) {
	return func(j *batchv1.Job) {
		j.Spec.Suspend = ptr.To(true)
		if queue != "" {
			j.Labels[alignv1.LabelKueueQueueName] = queue
		}
	}
}

// stagePodOf is pod i of job in phase p; terminated (with message msg and exit code) unless the
// phase is Pending or Running.
func stagePodOf(job *batchv1.Job, i int, phase corev1.PodPhase, exit int32, msg string) corev1.Pod {
	pod := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: job.Name + "-" + strconv.Itoa(i), Namespace: job.Namespace,
			Annotations: map[string]string{batchv1.JobCompletionIndexAnnotation: strconv.Itoa(i)}},
		Status: corev1.PodStatus{Phase: phase},
	}
	if phase == corev1.PodSucceeded || phase == corev1.PodFailed {
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: containerName,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exit, Reason: "Completed", Message: msg}}}}
	}
	return pod
}

func labelResult(i int32) alignv1.StageResult {
	return alignv1.StageResult{Stage: alignv1.StageLabel, Phase: 1, Index: i, Pairs: 7 + int64(i), Ties: 1}
}

// resultPod is pod i of job, succeeded with labelResult(i) as its termination message.
func resultPod(job *batchv1.Job, i int32) corev1.Pod {
	b, err := json.Marshal(labelResult(i))
	if err != nil {
		panic(err)
	}
	return stagePodOf(job, int(i), corev1.PodSucceeded, 0, string(b))
}

// tracking is a status whose in-progress stage is phase 1's stage at attempt retries, with the
// Running condition given as reason and message ("" for none).
func tracking(stage string, retries int32, reason, msg string) *alignv1.AlignmentRunStatus {
	st := &alignv1.AlignmentRunStatus{Phase: 1, Phases: 2, Stage: stage, Retries: retries}
	if reason != "" {
		st.Conditions = []metav1.Condition{{Type: alignv1.ConditionRunning, Status: metav1.ConditionTrue, Reason: reason, Message: msg}}
	}
	return st
}

func TestDecideStage(t *testing.T) {
	const label = alignv1.StageLabel
	running := stageJob(label, 0)
	done := stageJob(label, 0, completedAt(t0.Add(-10*time.Second)))
	doneLong := stageJob(label, 0, completedAt(t0.Add(-31*time.Second)))
	doneLong2 := stageJob(label, 2, completedAt(t0.Add(-31*time.Second)))
	failed := stageJob(label, 0, failedAt(t0.Add(-time.Second), "BackoffLimitExceeded", "Job has reached the specified backoff limit"))
	failedLong := stageJob(label, 0, failedAt(t0.Add(-6*time.Second), "BackoffLimitExceeded", "Job has reached the specified backoff limit"))
	failed2 := stageJob(label, 2, failedAt(t0.Add(-time.Second), "BackoffLimitExceeded", "Job has reached the specified backoff limit"))
	timedOut := stageJob(label, 0, func(j *batchv1.Job) { j.Spec.ActiveDeadlineSeconds = ptr.To(int64(600)) },
		failedAt(t0, batchv1.JobReasonDeadlineExceeded, "Job was active longer than specified deadline"))
	queued := stageJob(label, 0, suspendedJob("team-a"))
	suspended := stageJob(label, 0, suspendedJob(""))
	podFailed := func(j *batchv1.Job) corev1.Pod {
		return stagePodOf(j, 0, corev1.PodFailed, 1, `{"stage":"label","phase":1,"index":0,"message":"annotator unreachable: dial tcp 10.0.0.1:443: connection refused"}`)
	}
	disrupted := stagePodOf(running, 1, corev1.PodFailed, 137, "")
	disrupted.Status.Conditions = []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "TerminationByKubelet"}}
	unschedulable := stagePodOf(running, 0, corev1.PodPending, 0, "")
	unschedulable.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: corev1.PodReasonUnschedulable, Message: "0/3 nodes are available: 3 Insufficient memory."}}
	pullBackOff := stagePodOf(running, 1, corev1.PodPending, 0, "")
	pullBackOff.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: containerName, Image: "bpo:typo",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: `Back-off pulling image "bpo:typo"`}}}}
	longHold := stagePodOf(running, 0, corev1.PodPending, 0, "")
	longHold.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: corev1.PodReasonUnschedulable, Message: "0/300 nodes are available: " + strings.Repeat("1 node(s) had untolerated taint {dedicated: infra}. ", 30)}}
	longHoldMsg := "phase 1/2 stage label: Job r-p1-label: pod r-p1-label-0 is unschedulable: " + strings.TrimSpace(longHold.Status.Conditions[0].Message)
	const unschedulableMsg = "phase 1/2 stage label: Job r-p1-label: pod r-p1-label-0 is unschedulable: 0/3 nodes are available: 3 Insufficient memory."
	const suspendedMsg = "phase 1/2 stage label: Job r-p1-label is suspended and waits for whatever suspended it to resume it"
	const retryNote = "phase 1/2 stage label attempt 0 failed (pod r-p1-label-0: annotator unreachable: dial tcp 10.0.0.1:443: connection refused); retrying (1 of 2 retries)"
	const incomplete = "Job r-p1-label completed but only 1 of 2 pods left a valid StageResult in their termination message (0 unreadable or invalid)"

	for _, c := range []struct {
		name   string
		status *alignv1.AlignmentRunStatus
		jobs   []*batchv1.Job
		pods   []corev1.Pod
		limit  int32         // spec.backoffLimit: 0 means 2, -1 means 0
		grace  time.Duration // results grace; 30s when 0
		want   action
	}{{
		name:   "no Job: create the first attempt (other stages' Jobs do not count)",
		status: tracking(alignv1.StageSample, 1, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{stageJob(alignv1.StageSample, 1, completedAt(t0.Add(-time.Minute)))},
		want:   action{Kind: actCreate},
	}, {
		name:   "Job deleted by suspend: recreated under the attempt the status records",
		status: tracking(label, 1, alignv1.ReasonSuspended, "x"),
		want:   action{Kind: actCreate, Attempt: 1},
	}, {
		name:   "no live Job, one being deleted: wait for it to go",
		status: tracking(label, 0, "", ""),
		jobs:   []*batchv1.Job{stageJob(label, 0, beingDeleted)},
		want: action{Kind: actWait, Reason: alignv1.ReasonStageRunning, RequeueAfter: time.Second,
			Message: "phase 1/2 stage label: waiting for a deleted Job to go away"},
	}, {
		name:   "running",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{running},
		pods:   []corev1.Pod{stagePodOf(running, 0, corev1.PodRunning, 0, "")},
		want: action{Kind: actRunning, Job: "r-p1-label", Reason: alignv1.ReasonStageRunning,
			Message: "phase 1/2 stage label running (Job r-p1-label)"},
	}, {
		name:   "status lags: the newest attempt's Job is the current one",
		status: tracking(alignv1.StageSample, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{failed, stageJob(label, 1)},
		want: action{Kind: actRunning, Attempt: 1, Job: "r-p1-label-a1", Reason: alignv1.ReasonStageRunning,
			Message: "phase 1/2 stage label running (Job r-p1-label-a1)"},
	}, {
		name:   "a pod lost to a disruption is the Job's to replace: still running",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{running},
		pods:   []corev1.Pod{stagePodOf(running, 0, corev1.PodRunning, 0, ""), disrupted},
		want: action{Kind: actRunning, Job: "r-p1-label", Reason: alignv1.ReasonStageRunning,
			Message: "phase 1/2 stage label running (Job r-p1-label)"},
	}, {
		name:   "queued in Kueue: held, reported once",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{queued},
		want: action{Kind: actHeld, Job: "r-p1-label", Reason: alignv1.ReasonStageQueued,
			Message: `phase 1/2 stage label: Job r-p1-label is queued in Kueue LocalQueue "team-a" and waits for admission (suspended until admitted; is Kueue installed and the queue defined?)`,
			Events: []stageEvent{{Type: corev1.EventTypeNormal, Reason: alignv1.ReasonStageQueued, Action: "WaitForStage",
				Note: `phase 1/2 stage label: Job r-p1-label is queued in Kueue LocalQueue "team-a" and waits for admission (suspended until admitted; is Kueue installed and the queue defined?)`}}},
	}, {
		name:   "suspended by someone else, already reported: held, no new event",
		status: tracking(label, 0, alignv1.ReasonStageQueued, suspendedMsg),
		jobs:   []*batchv1.Job{suspended},
		want:   action{Kind: actHeld, Job: "r-p1-label", Reason: alignv1.ReasonStageQueued, Message: suspendedMsg},
	}, {
		name:   "unschedulable pod: held with a warning",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{running},
		pods:   []corev1.Pod{unschedulable},
		want: action{Kind: actHeld, Job: "r-p1-label", Reason: alignv1.ReasonStagePodsPending, Message: unschedulableMsg,
			Events: []stageEvent{{Type: corev1.EventTypeWarning, Reason: alignv1.ReasonStagePodsPending, Action: "WaitForStage", Note: unschedulableMsg}}},
	}, {
		// The condition holds the message cut to 1024 bytes: the same hold is not reported again.
		name:   "a hold with a long message, already reported: no new event",
		status: tracking(label, 0, alignv1.ReasonStagePodsPending, truncate(longHoldMsg, 1024)),
		jobs:   []*batchv1.Job{running},
		pods:   []corev1.Pod{longHold},
		want:   action{Kind: actHeld, Job: "r-p1-label", Reason: alignv1.ReasonStagePodsPending, Message: longHoldMsg},
	}, {
		name:   "image pull back-off, a different hold than the one reported: reported again",
		status: tracking(label, 0, alignv1.ReasonStagePodsPending, unschedulableMsg),
		jobs:   []*batchv1.Job{running},
		pods:   []corev1.Pod{stagePodOf(running, 0, corev1.PodRunning, 0, ""), pullBackOff},
		want: action{Kind: actHeld, Job: "r-p1-label", Reason: alignv1.ReasonStagePodsPending,
			Message: `phase 1/2 stage label: Job r-p1-label: pod r-p1-label-1 container bpo (image bpo:typo): ImagePullBackOff: Back-off pulling image "bpo:typo"`,
			Events: []stageEvent{{Type: corev1.EventTypeWarning, Reason: alignv1.ReasonStagePodsPending, Action: "WaitForStage",
				Note: `phase 1/2 stage label: Job r-p1-label: pod r-p1-label-1 container bpo (image bpo:typo): ImagePullBackOff: Back-off pulling image "bpo:typo"`}}},
	}, {
		name:   "complete with every result: complete",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{done},
		pods:   []corev1.Pod{resultPod(done, 1), resultPod(done, 0)},
		want:   action{Kind: actComplete, Job: "r-p1-label", Results: map[int32]alignv1.StageResult{0: labelResult(0), 1: labelResult(1)}},
	}, {
		name:   "complete, a result missing within the grace period: wait",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{done},
		pods:   []corev1.Pod{resultPod(done, 0)},
		want: action{Kind: actWait, Job: "r-p1-label", Reason: alignv1.ReasonStageRunning, RequeueAfter: 2 * time.Second,
			Message: "phase 1/2 stage label: Job r-p1-label complete, waiting for StageResults (1 of 2)"},
	}, {
		name:   "complete, a result missing after the grace period: retry",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{doneLong},
		pods:   []corev1.Pod{resultPod(doneLong, 0)},
		want: action{Kind: actRetry, Attempt: 1, Job: "r-p1-label", Events: []stageEvent{
			{Type: corev1.EventTypeWarning, Reason: "StageResultsIncomplete", Action: "ReadResults", Note: "phase 1/2 stage label: " + incomplete},
			{Type: corev1.EventTypeWarning, Reason: "StageRetry", Action: "RetryStage", OnCreate: true,
				Note: "phase 1/2 stage label attempt 0 failed (" + incomplete + "); retrying (1 of 2 retries)"},
		}},
	}, {
		name:   "complete, an unreadable result on the last attempt: fail",
		status: tracking(label, 2, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{doneLong2},
		pods:   []corev1.Pod{resultPod(doneLong2, 0), stagePodOf(doneLong2, 1, corev1.PodSucceeded, 0, "null")},
		want: action{Kind: actFail, Attempt: 2, Job: "r-p1-label-a2", Reason: alignv1.ReasonStageFailed,
			Message: "phase 1/2 stage label failed after 3 attempts (backoffLimit 2): Job r-p1-label-a2 completed but only 1 of 2 pods left a valid StageResult in their termination message (1 unreadable or invalid)",
			Events: []stageEvent{
				{Type: corev1.EventTypeWarning, Reason: "StageResultsIncomplete", Action: "ReadResults",
					Note: "phase 1/2 stage label: Job r-p1-label-a2 completed but only 1 of 2 pods left a valid StageResult in their termination message (1 unreadable or invalid)"},
				{Type: corev1.EventTypeWarning, Reason: alignv1.ReasonStageFailed, Action: "Fail",
					Note: "phase 1/2 stage label failed after 3 attempts (backoffLimit 2): Job r-p1-label-a2 completed but only 1 of 2 pods left a valid StageResult in their termination message (1 unreadable or invalid)"},
			}},
	}, {
		name:   "failed with the pod's message, retries left: retry",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{failed},
		pods:   []corev1.Pod{stagePodOf(failed, 1, corev1.PodSucceeded, 0, "{}"), podFailed(failed)},
		want: action{Kind: actRetry, Attempt: 1, Job: "r-p1-label", Events: []stageEvent{
			{Type: corev1.EventTypeWarning, Reason: "StageRetry", Action: "RetryStage", OnCreate: true, Note: retryNote}}},
	}, {
		name:   "failed with the pod's message, retries used: fail",
		status: tracking(label, 2, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{stageJob(label, 0, failedAt(t0.Add(-time.Hour), "", "")), stageJob(label, 1, failedAt(t0.Add(-time.Minute), "", "")), failed2},
		pods:   []corev1.Pod{podFailed(failed2)},
		want: action{Kind: actFail, Attempt: 2, Job: "r-p1-label-a2", Reason: alignv1.ReasonStageFailed,
			Message: "phase 1/2 stage label failed after 3 attempts (backoffLimit 2): pod r-p1-label-a2-0: annotator unreachable: dial tcp 10.0.0.1:443: connection refused",
			Events: []stageEvent{{Type: corev1.EventTypeWarning, Reason: alignv1.ReasonStageFailed, Action: "Fail",
				Note: "phase 1/2 stage label failed after 3 attempts (backoffLimit 2): pod r-p1-label-a2-0: annotator unreachable: dial tcp 10.0.0.1:443: connection refused"}}},
	}, {
		name:   "backoffLimit 0: the first failure fails the run",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{failed},
		pods:   []corev1.Pod{podFailed(failed)},
		limit:  -1,
		want: action{Kind: actFail, Job: "r-p1-label", Reason: alignv1.ReasonStageFailed,
			Message: "phase 1/2 stage label failed after 1 attempts (backoffLimit 0): pod r-p1-label-0: annotator unreachable: dial tcp 10.0.0.1:443: connection refused",
			Events: []stageEvent{{Type: corev1.EventTypeWarning, Reason: alignv1.ReasonStageFailed, Action: "Fail",
				Note: "phase 1/2 stage label failed after 1 attempts (backoffLimit 0): pod r-p1-label-0: annotator unreachable: dial tcp 10.0.0.1:443: connection refused"}}},
	}, {
		name:   "failed, the pod's message not seen yet: wait for it",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{failed},
		pods:   []corev1.Pod{stagePodOf(failed, 0, corev1.PodRunning, 0, "")},
		want: action{Kind: actWait, Job: "r-p1-label", Reason: alignv1.ReasonStageRunning, RequeueAfter: 2 * time.Second,
			Message: "phase 1/2 stage label: Job r-p1-label failed, waiting for the failed pod's message"},
	}, {
		name:   "failed, no pod message after 5s: retry with the Job's message",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{failedLong},
		want: action{Kind: actRetry, Attempt: 1, Job: "r-p1-label", Events: []stageEvent{{Type: corev1.EventTypeWarning, Reason: "StageRetry", Action: "RetryStage", OnCreate: true,
			Note: "phase 1/2 stage label attempt 0 failed (job r-p1-label: BackoffLimitExceeded: Job has reached the specified backoff limit); retrying (1 of 2 retries)"}}},
	}, {
		name:   "failed, no pod message, a results grace shorter than 5s has passed: retry",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{failed},
		grace:  500 * time.Millisecond,
		want: action{Kind: actRetry, Attempt: 1, Job: "r-p1-label", Events: []stageEvent{{Type: corev1.EventTypeWarning, Reason: "StageRetry", Action: "RetryStage", OnCreate: true,
			Note: "phase 1/2 stage label attempt 0 failed (job r-p1-label: BackoffLimitExceeded: Job has reached the specified backoff limit); retrying (1 of 2 retries)"}}},
	}, {
		name:   "the stage's activeDeadlineSeconds stopped it: retry at once (no pod message to wait for)",
		status: tracking(label, 0, alignv1.ReasonStageRunning, "x"),
		jobs:   []*batchv1.Job{timedOut},
		want: action{Kind: actRetry, Attempt: 1, Job: "r-p1-label", Events: []stageEvent{{Type: corev1.EventTypeWarning, Reason: "StageRetry", Action: "RetryStage", OnCreate: true,
			Note: "phase 1/2 stage label attempt 0 failed (job r-p1-label: the label stage ran longer than spec.labeler.activeDeadlineSeconds (600s) and was stopped; raise the deadline or the stage's resources); retrying (1 of 2 retries)"}}},
	}} {
		t.Run(c.name, func(t *testing.T) {
			limit := c.limit
			switch limit {
			case 0:
				limit = 2
			case -1:
				limit = 0
			}
			grace := c.grace
			if grace == 0 {
				grace = 30 * time.Second
			}
			in := stageInputs{Phase: 1, Phases: 2, Stage: label, Status: c.status, Jobs: c.jobs, Pods: c.pods,
				Now: t0, BackoffLimit: limit, ResultsGrace: grace}
			before, status := append([]corev1.Pod(nil), c.pods...), c.status.DeepCopy()
			got := decideStage(in)
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("decideStage (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, c.pods); diff != "" {
				t.Errorf("decideStage changed its input pods (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(status, c.status); diff != "" {
				t.Errorf("decideStage changed the status (-before +after):\n%s", diff)
			}
		})
	}
}
