package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RunState is a one-word summary of an AlignmentRun's conditions, for tools that read one
// scalar (kubectl get, Argo Workflows successCondition, dashboards). It is derived: the
// conditions are the source of truth, and StateOf is the one function that maps them to it.
// +kubebuilder:validation:Enum=Pending;Running;Suspended;Succeeded;Failed
type RunState string

const (
	// StatePending: no condition is True yet (no stage Job has been created).
	StatePending RunState = "Pending"
	// StateRunning: Running=True (a stage Job runs, is queued, or its pods wait to start).
	StateRunning RunState = "Running"
	// StateSuspended: Suspended=True (spec.suspend is true).
	StateSuspended RunState = "Suspended"
	// StateSucceeded: Succeeded=True (terminal).
	StateSucceeded RunState = "Succeeded"
	// StateFailed: Failed=True (terminal).
	StateFailed RunState = "Failed"
)

// RunStates lists every state (the values of the runs-by-state metric).
var RunStates = []RunState{StatePending, StateRunning, StateSuspended, StateSucceeded, StateFailed}

// StateOf derives status.state from the conditions. The controller keeps at most one of them
// True; should several be, the terminal ones win (Failed before Succeeded), then Suspended, then
// Running, the same order as the Argo CD health check (config/argocd/health.lua).
func StateOf(conditions []metav1.Condition) RunState {
	for _, c := range []struct {
		condition string
		state     RunState
	}{
		{ConditionFailed, StateFailed},
		{ConditionSucceeded, StateSucceeded},
		{ConditionSuspended, StateSuspended},
		{ConditionRunning, StateRunning},
	} {
		if meta.IsStatusConditionTrue(conditions, c.condition) {
			return c.state
		}
	}
	return StatePending
}
