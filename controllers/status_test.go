package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

func cond(t, reason, msg string, ok bool) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg}
}

func TestConditionsFor(t *testing.T) {
	const (
		running   = alignv1.ConditionRunning
		suspended = alignv1.ConditionSuspended
		succeeded = alignv1.ConditionSucceeded
		failed    = alignv1.ConditionFailed
	)
	notSuspended := cond(suspended, alignv1.ReasonNotSuspended, "spec.suspend has not been set", false)
	inProgress := func(t string) metav1.Condition { return cond(t, alignv1.ReasonInProgress, notFinished, false) }
	resumedBefore := cond(suspended, alignv1.ReasonResumed, "spec.suspend is false: resumed at phase 1/2 stage sample", false)
	wasSuspended := []metav1.Condition{cond(suspended, alignv1.ReasonSuspended, "spec.suspend is true", true)}
	long := strings.Repeat("x", 1100)

	for _, c := range []struct {
		name  string
		prev  []metav1.Condition
		state runState
		want  []metav1.Condition
	}{{
		name:  "new run: pending",
		state: pendingState(),
		want: []metav1.Condition{cond(running, alignv1.ReasonPending, "no stage has started yet", false), notSuspended,
			inProgress(succeeded), inProgress(failed)},
	}, {
		name:  "running, after a resume: Suspended keeps when it was resumed",
		prev:  []metav1.Condition{resumedBefore},
		state: runningState(alignv1.ReasonStageRunning, "phase 1/2 stage label running (Job r-p1-label)"),
		want: []metav1.Condition{cond(running, alignv1.ReasonStageRunning, "phase 1/2 stage label running (Job r-p1-label)", true), resumedBefore,
			inProgress(succeeded), inProgress(failed)},
	}, {
		name:  "held: Running=True with the hold's reason",
		state: runningState(alignv1.ReasonStageQueued, "queued"),
		want:  []metav1.Condition{cond(running, alignv1.ReasonStageQueued, "queued", true), notSuspended, inProgress(succeeded), inProgress(failed)},
	}, {
		name:  "suspended",
		state: suspendedState("spec.suspend is true: suspended at phase 1/2 stage label"),
		want: []metav1.Condition{cond(running, alignv1.ReasonSuspended, "spec.suspend is true: suspended at phase 1/2 stage label", false),
			cond(suspended, alignv1.ReasonSuspended, "spec.suspend is true: suspended at phase 1/2 stage label", true),
			inProgress(succeeded), inProgress(failed)},
	}, {
		name:  "resumed, no stage advanced yet: nothing is True",
		prev:  wasSuspended,
		state: resumedState("spec.suspend is false: resumed at phase 1/2 stage label"),
		want: []metav1.Condition{cond(running, alignv1.ReasonResumed, "spec.suspend is false: resumed at phase 1/2 stage label", false),
			cond(suspended, alignv1.ReasonResumed, "spec.suspend is false: resumed at phase 1/2 stage label", false),
			inProgress(succeeded), inProgress(failed)},
	}, {
		name:  "succeeded",
		state: succeededState("all 2 phases completed"),
		want: []metav1.Condition{cond(running, alignv1.ReasonSucceeded, "all 2 phases completed", false), notSuspended,
			cond(succeeded, alignv1.ReasonSucceeded, "all 2 phases completed", true), cond(failed, alignv1.ReasonSucceeded, "all 2 phases completed", false)},
	}, {
		name:  "failed",
		state: failedState(alignv1.ReasonStageFailed, "phase 1/2 stage label failed after 3 attempts"),
		want: []metav1.Condition{cond(running, alignv1.ReasonFailed, "phase 1/2 stage label failed after 3 attempts", false), notSuspended,
			cond(succeeded, alignv1.ReasonFailed, "phase 1/2 stage label failed after 3 attempts", false),
			cond(failed, alignv1.ReasonStageFailed, "phase 1/2 stage label failed after 3 attempts", true)},
	}, {
		// Validation runs before suspend: a suspended run whose spec the stage policy now refuses
		// fails with Suspended left as it was (status.state says Failed).
		name:  "failed while suspended",
		prev:  wasSuspended,
		state: failedState(alignv1.ReasonPolicyViolation, "stage policy: image not allowed"),
		want: []metav1.Condition{cond(running, alignv1.ReasonFailed, "stage policy: image not allowed", false), wasSuspended[0],
			cond(succeeded, alignv1.ReasonFailed, "stage policy: image not allowed", false),
			cond(failed, alignv1.ReasonPolicyViolation, "stage policy: image not allowed", true)},
	}, {
		name:  "messages are cut to the schema's 1024 bytes",
		state: runningState(alignv1.ReasonStageRunning, long),
		want: []metav1.Condition{cond(running, alignv1.ReasonStageRunning, long[:1024]+"...", true), notSuspended,
			inProgress(succeeded), inProgress(failed)},
	}} {
		t.Run(c.name, func(t *testing.T) {
			got := conditionsFor(c.prev, c.state)
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("conditionsFor (-want +got):\n%s", diff)
			}
			// The state read back from the conditions is the state they were made from.
			if s := alignv1.StateOf(got); s != c.state.State {
				t.Errorf("StateOf = %s, want %s", s, c.state.State)
			}
		})
	}
}

// TestSetState: setState stamps generation and time, keeps lastTransitionTime of a condition
// whose status did not change, and sets status.state in the same step.
func TestSetState(t *testing.T) {
	t1, t2 := metav1.NewTime(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)), metav1.NewTime(time.Date(2026, 3, 1, 12, 5, 0, 0, time.UTC))
	run := &alignv1.AlignmentRun{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
	s := &scope{run: run, now: t1}
	initConditions(s)
	setState(s, runningState(alignv1.ReasonStageRunning, "running"))
	s.now = t2
	setState(s, runningState(alignv1.ReasonStageQueued, "queued"))

	stamp := func(c metav1.Condition, at metav1.Time) metav1.Condition {
		c.ObservedGeneration, c.LastTransitionTime = 3, at
		return c
	}
	want := []metav1.Condition{
		stamp(cond(alignv1.ConditionRunning, alignv1.ReasonStageQueued, "queued", true), t1),
		stamp(cond(alignv1.ConditionSuspended, alignv1.ReasonNotSuspended, "spec.suspend has not been set", false), t1),
		stamp(cond(alignv1.ConditionSucceeded, alignv1.ReasonInProgress, notFinished, false), t1),
		stamp(cond(alignv1.ConditionFailed, alignv1.ReasonInProgress, notFinished, false), t1),
	}
	if diff := cmp.Diff(want, run.Status.Conditions); diff != "" {
		t.Errorf("conditions (-want +got):\n%s", diff)
	}
	if run.Status.State != alignv1.StateRunning {
		t.Errorf("state = %s, want Running", run.Status.State)
	}

	setState(s, failedState(alignv1.ReasonDeadlineExceeded, "deadline"))
	want = []metav1.Condition{
		stamp(cond(alignv1.ConditionRunning, alignv1.ReasonFailed, "deadline", false), t2),
		want[1],
		stamp(cond(alignv1.ConditionSucceeded, alignv1.ReasonFailed, "deadline", false), t1),
		stamp(cond(alignv1.ConditionFailed, alignv1.ReasonDeadlineExceeded, "deadline", true), t2),
	}
	if diff := cmp.Diff(want, run.Status.Conditions); diff != "" {
		t.Errorf("conditions after failing (-want +got):\n%s", diff)
	}
	if run.Status.State != alignv1.StateFailed {
		t.Errorf("state = %s, want Failed", run.Status.State)
	}
}

// TestInitConditions: a status missing conditions gets the missing ones, in the fixed order
// after those it has, and the existing ones are left alone.
func TestInitConditions(t *testing.T) {
	at := metav1.NewTime(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	existing := cond(alignv1.ConditionFailed, alignv1.ReasonStageFailed, "failed", true)
	run := &alignv1.AlignmentRun{ObjectMeta: metav1.ObjectMeta{Generation: 1}}
	run.Status.Conditions = []metav1.Condition{existing}
	initConditions(&scope{run: run, now: at})
	stamp := func(c metav1.Condition) metav1.Condition {
		c.ObservedGeneration, c.LastTransitionTime = 1, at
		return c
	}
	want := []metav1.Condition{existing,
		stamp(cond(alignv1.ConditionRunning, alignv1.ReasonPending, "no stage has started yet", false)),
		stamp(cond(alignv1.ConditionSuspended, alignv1.ReasonNotSuspended, "spec.suspend has not been set", false)),
		stamp(cond(alignv1.ConditionSucceeded, alignv1.ReasonInProgress, notFinished, false)),
	}
	if diff := cmp.Diff(want, run.Status.Conditions); diff != "" {
		t.Errorf("conditions (-want +got):\n%s", diff)
	}
}
