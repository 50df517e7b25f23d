package v1alpha1

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestStateOf(t *testing.T) {
	cond := func(typ string, status metav1.ConditionStatus) metav1.Condition {
		return metav1.Condition{Type: typ, Status: status, Reason: "R"}
	}
	const T, F, U = metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown
	cases := []struct {
		name string
		in   []metav1.Condition
		want RunState
	}{
		{"no conditions", nil, StatePending},
		{"all four False (before the first Job)", []metav1.Condition{cond(ConditionRunning, F), cond(ConditionSuspended, F), cond(ConditionSucceeded, F), cond(ConditionFailed, F)}, StatePending},
		{"Unknown is not True", []metav1.Condition{cond(ConditionRunning, U)}, StatePending},
		{"running", []metav1.Condition{cond(ConditionRunning, T), cond(ConditionSuspended, F), cond(ConditionSucceeded, F), cond(ConditionFailed, F)}, StateRunning},
		{"suspended", []metav1.Condition{cond(ConditionRunning, F), cond(ConditionSuspended, T), cond(ConditionSucceeded, F), cond(ConditionFailed, F)}, StateSuspended},
		{"succeeded", []metav1.Condition{cond(ConditionRunning, F), cond(ConditionSucceeded, T), cond(ConditionFailed, F)}, StateSucceeded},
		{"failed", []metav1.Condition{cond(ConditionRunning, F), cond(ConditionSucceeded, F), cond(ConditionFailed, T)}, StateFailed},
		// Never written by the controller, but the order is defined: terminal first.
		{"failed wins over suspended", []metav1.Condition{cond(ConditionSuspended, T), cond(ConditionFailed, T)}, StateFailed},
		{"failed wins over succeeded", []metav1.Condition{cond(ConditionSucceeded, T), cond(ConditionFailed, T)}, StateFailed},
		{"succeeded wins over running", []metav1.Condition{cond(ConditionRunning, T), cond(ConditionSucceeded, T)}, StateSucceeded},
		{"suspended wins over running", []metav1.Condition{cond(ConditionRunning, T), cond(ConditionSuspended, T)}, StateSuspended},
		{"unknown types are ignored", []metav1.Condition{cond("Ready", T)}, StatePending},
	}
	for _, c := range cases {
		if got := StateOf(c.in); got != c.want {
			t.Errorf("%s: StateOf = %s, want %s", c.name, got, c.want)
		}
	}
}
