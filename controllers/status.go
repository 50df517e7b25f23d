package controllers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// runState is the one value the four conditions (and status.state) are derived from: which
// condition is True, with its reason and message. Pending means none is: Reason is then
// ReasonPending (no stage has started) or ReasonResumed (spec.suspend went back to false and no
// stage has been advanced since).
type runState struct {
	State   alignv1.RunState
	Reason  string
	Message string
}

const notFinished = "the run has not finished"

func pendingState() runState {
	return runState{alignv1.StatePending, alignv1.ReasonPending, "no stage has started yet"}
}
func resumedState(msg string) runState {
	return runState{alignv1.StatePending, alignv1.ReasonResumed, msg}
}
func runningState(reason, msg string) runState { return runState{alignv1.StateRunning, reason, msg} }
func suspendedState(msg string) runState {
	return runState{alignv1.StateSuspended, alignv1.ReasonSuspended, msg}
}
func succeededState(msg string) runState {
	return runState{alignv1.StateSucceeded, alignv1.ReasonSucceeded, msg}
}
func failedState(reason, msg string) runState { return runState{alignv1.StateFailed, reason, msg} }

// conditionsFor is the whole mapping from a state to the four conditions (type, status, reason,
// message; the caller stamps times and generations), in their fixed order: Running, Suspended,
// Succeeded, Failed. prev is needed for
// one thing only: Suspended=False keeps its reason (NotSuspended, or Resumed and when) outside
// the states that set it, because reconcileDeadline counts from the last resume.
func conditionsFor(prev []metav1.Condition, rs runState) []metav1.Condition {
	cond := func(t string, ok bool, reason, msg string) metav1.Condition {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		return metav1.Condition{Type: t, Status: s, Reason: reason, Message: truncate(msg, 1024)}
	}
	suspended := cond(alignv1.ConditionSuspended, false, alignv1.ReasonNotSuspended, "spec.suspend has not been set")
	if c := meta.FindStatusCondition(prev, alignv1.ConditionSuspended); c != nil {
		suspended = cond(alignv1.ConditionSuspended, c.Status == metav1.ConditionTrue, c.Reason, c.Message)
	}
	running := cond(alignv1.ConditionRunning, false, rs.Reason, rs.Message)
	succeeded := cond(alignv1.ConditionSucceeded, false, alignv1.ReasonInProgress, notFinished)
	failed := cond(alignv1.ConditionFailed, false, alignv1.ReasonInProgress, notFinished)
	switch rs.State {
	case alignv1.StatePending:
		if rs.Reason == alignv1.ReasonResumed {
			suspended = cond(alignv1.ConditionSuspended, false, alignv1.ReasonResumed, rs.Message)
		}
	case alignv1.StateRunning:
		running.Status = metav1.ConditionTrue
	case alignv1.StateSuspended:
		running.Reason = alignv1.ReasonSuspended
		suspended = cond(alignv1.ConditionSuspended, true, alignv1.ReasonSuspended, rs.Message)
	case alignv1.StateSucceeded:
		running.Reason = alignv1.ReasonSucceeded
		succeeded = cond(alignv1.ConditionSucceeded, true, alignv1.ReasonSucceeded, rs.Message)
		failed = cond(alignv1.ConditionFailed, false, alignv1.ReasonSucceeded, rs.Message)
	case alignv1.StateFailed:
		running.Reason = alignv1.ReasonFailed
		succeeded = cond(alignv1.ConditionSucceeded, false, alignv1.ReasonFailed, rs.Message)
		failed = cond(alignv1.ConditionFailed, true, rs.Reason, rs.Message)
	}
	return []metav1.Condition{running, suspended, succeeded, failed}
}

// setState records rs in the run's status: the four conditions and status.state. A condition
// whose status does not change keeps its lastTransitionTime (meta.SetStatusCondition).
func setState(s *scope, rs runState) {
	st := &s.run.Status
	for _, c := range conditionsFor(st.Conditions, rs) {
		c.ObservedGeneration, c.LastTransitionTime = s.run.Generation, s.now
		meta.SetStatusCondition(&st.Conditions, c)
	}
	st.State = alignv1.StateOf(st.Conditions)
}

// initConditions adds the conditions a status lacks (a new run), as for a run that has not
// started, in their fixed order; existing ones are left as they are.
func initConditions(s *scope) {
	st := &s.run.Status
	for _, c := range conditionsFor(nil, pendingState()) {
		if meta.FindStatusCondition(st.Conditions, c.Type) == nil {
			c.ObservedGeneration, c.LastTransitionTime = s.run.Generation, s.now
			meta.SetStatusCondition(&st.Conditions, c)
		}
	}
}

// runningCondition returns the Running condition's reason and message ("" when absent).
func runningCondition(st *alignv1.AlignmentRunStatus) (reason, msg string) {
	if c := meta.FindStatusCondition(st.Conditions, alignv1.ConditionRunning); c != nil {
		return c.Reason, c.Message
	}
	return "", ""
}

func isTrue(st *alignv1.AlignmentRunStatus, t string) bool {
	return meta.IsStatusConditionTrue(st.Conditions, t)
}
