package main

import (
	"context"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

const (
	leaseNamespace = "kube-node-lease"
	leaseSeconds   = 40
	agentVersion   = "v1.37.2-podagent"
)

func (a *agent) nodeLabels() map[string]string {
	return map[string]string{
		"kubernetes.io/hostname": a.opts.nodeName,
		"kubernetes.io/os":       runtime.GOOS,
		"kubernetes.io/arch":     runtime.GOARCH,
		"bpo.dev/podagent":       "true",
	}
}

// setNodeStatus fills capacity, addresses, info and a Ready condition heartbeat.
func (a *agent) setNodeStatus(n *corev1.Node) {
	now := metav1.Now()
	res := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse(a.opts.cpu),
		corev1.ResourceMemory:           resource.MustParse(a.opts.memory),
		corev1.ResourcePods:             *resource.NewQuantity(int64(a.opts.maxPods), resource.DecimalSI),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	n.Status.Capacity = res
	n.Status.Allocatable = res.DeepCopy()
	n.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: a.hostIP},
		{Type: corev1.NodeHostName, Address: a.opts.nodeName},
	}
	n.Status.NodeInfo = corev1.NodeSystemInfo{
		MachineID:               "podagent",
		SystemUUID:              a.opts.nodeName,
		BootID:                  a.opts.nodeName,
		KernelVersion:           "podagent",
		OSImage:                 "podagent (local processes)",
		ContainerRuntimeVersion: "podagent://" + agentVersion,
		KubeletVersion:          agentVersion,
		OperatingSystem:         runtime.GOOS,
		Architecture:            runtime.GOARCH,
	}
	n.Status.DaemonEndpoints = corev1.NodeDaemonEndpoints{}
	conds := []corev1.NodeCondition{
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "podagent does not track memory"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "podagent does not track disk"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "podagent does not track pids"},
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "podagent is posting ready status"},
	}
	for _, c := range conds {
		c.LastHeartbeatTime = now
		c.LastTransitionTime = now
		found := false
		for i := range n.Status.Conditions {
			old := &n.Status.Conditions[i]
			if old.Type != c.Type {
				continue
			}
			found = true
			if old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
			*old = c
		}
		if !found {
			n.Status.Conditions = append(n.Status.Conditions, c)
		}
	}
}

// registerNode creates or adopts the Node and posts its status.
func (a *agent) registerNode(ctx context.Context) error {
	nodes := a.cs.CoreV1().Nodes()
	n, err := nodes.Get(ctx, a.opts.nodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		n = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: a.opts.nodeName, Labels: a.nodeLabels()}}
		a.setNodeStatus(n)
		n, err = nodes.Create(ctx, n, metav1.CreateOptions{})
	}
	if err != nil {
		return err
	}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := nodes.Get(ctx, a.opts.nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		changed := false
		if cur.Labels == nil {
			cur.Labels = map[string]string{}
		}
		for k, v := range a.nodeLabels() {
			if cur.Labels[k] != v {
				cur.Labels[k], changed = v, true
			}
		}
		if cur.Spec.Unschedulable {
			cur.Spec.Unschedulable, changed = false, true
		}
		if !changed {
			return nil
		}
		_, err = nodes.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	}); err != nil {
		return err
	}
	if err := a.postNodeStatus(ctx); err != nil {
		return err
	}
	return a.renewLease(ctx)
}

func (a *agent) postNodeStatus(ctx context.Context) error {
	nodes := a.cs.CoreV1().Nodes()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := nodes.Get(ctx, a.opts.nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		a.setNodeStatus(n)
		_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

func (a *agent) renewLease(ctx context.Context) error {
	leases := a.cs.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, a.opts.nodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		n, nerr := a.cs.CoreV1().Nodes().Get(ctx, a.opts.nodeName, metav1.GetOptions{})
		if nerr != nil {
			return nerr
		}
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: a.opts.nodeName, Namespace: leaseNamespace,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(a.opts.nodeName),
				LeaseDurationSeconds: ptr.To[int32](leaseSeconds),
				RenewTime:            &now,
			},
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.HolderIdentity = ptr.To(a.opts.nodeName)
	l.Spec.LeaseDurationSeconds = ptr.To[int32](leaseSeconds)
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// heartbeatLoop renews the node Lease and refreshes NodeReady every --heartbeat; if the Node was
// deleted it is registered again.
func (a *agent) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(a.opts.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.renewLease(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("lease renewal failed", "err", err)
		}
		err := a.postNodeStatus(ctx)
		if apierrors.IsNotFound(err) {
			a.log.Warn("node was deleted; registering again")
			err = a.registerNode(ctx)
		}
		if err != nil && ctx.Err() == nil {
			a.log.Warn("node status update failed", "err", err)
		}
	}
}
