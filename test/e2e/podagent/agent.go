package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

func terminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func gracePeriod(p *corev1.Pod) time.Duration {
	if p.DeletionGracePeriodSeconds != nil {
		return time.Duration(*p.DeletionGracePeriodSeconds) * time.Second
	}
	if p.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*p.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// recoverPods handles the pods this node had before the agent (re)started: a pod whose containers
// had started has lost its processes, so it is marked Failed (reason AgentRestarted) and its
// controller replaces it; pods being deleted are deleted at once.
func (a *agent) recoverPods(ctx context.Context) error {
	list, err := a.cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", a.opts.nodeName).String(),
	})
	if err != nil {
		return err
	}
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp != nil {
			a.ignored[p.UID] = true
			a.deletePodNow(p.Namespace, p.Name, p.UID)
			continue
		}
		if terminal(p) || !wasStarted(p) {
			continue
		}
		a.ignored[p.UID] = true
		if err := a.failRestarted(ctx, p); err != nil {
			a.log.Error("marking pod failed after agent restart", "pod", p.Namespace+"/"+p.Name, "err", err)
			continue
		}
		a.log.Info("pod was running before the agent restarted: marked Failed", "pod", p.Namespace+"/"+p.Name, "reason", "AgentRestarted")
	}
	return nil
}

func wasStarted(p *corev1.Pod) bool {
	if p.Status.Phase == corev1.PodRunning {
		return true
	}
	for _, l := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, cs := range l {
			if cs.State.Running != nil || cs.State.Terminated != nil {
				return true
			}
		}
	}
	return false
}

func (a *agent) failRestarted(ctx context.Context, p *corev1.Pod) error {
	const msg = "podagent restarted while the pod was running; its processes are gone"
	pods := a.cs.CoreV1().Pods(p.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil || cur.UID != p.UID || terminal(cur) {
			return err
		}
		now := metav1.Now()
		st := &cur.Status
		st.Phase, st.Reason, st.Message = corev1.PodFailed, "AgentRestarted", msg
		for _, l := range [][]corev1.ContainerStatus{st.InitContainerStatuses, st.ContainerStatuses} {
			for i := range l {
				cs := &l[i]
				if cs.State.Terminated != nil {
					continue
				}
				started := now
				if cs.State.Running != nil {
					started = cs.State.Running.StartedAt
				}
				cs.Ready = false
				cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 137, Reason: "AgentRestarted", Message: msg, StartedAt: started, FinishedAt: now}}
			}
		}
		setCondition(st, corev1.ContainersReady, false, "PodCompleted")
		setCondition(st, corev1.PodReady, false, "PodCompleted")
		setCondition(st, corev1.PodReadyToStartContainers, false, "")
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// watchPods starts an informer on the pods bound to this node.
func (a *agent) watchPods(ctx context.Context) error {
	f := informers.NewSharedInformerFactoryWithOptions(a.cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.opts.nodeName).String()
	}))
	inf := f.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.sync(obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { a.sync(obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				a.forget(p)
			}
		},
	})
	if err != nil {
		return err
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("pod informer did not sync")
	}
	return nil
}

// sync reacts to a pod bound to this node.
func (a *agent) sync(p *corev1.Pod) {
	if p.Spec.NodeName != a.opts.nodeName {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopping {
		return
	}
	w := a.workers[p.UID]
	if p.DeletionTimestamp != nil {
		if w != nil {
			grace := gracePeriod(p)
			go w.requestDelete(grace)
			return
		}
		if !a.deleting[p.UID] {
			a.deleting[p.UID] = true
			go a.deletePodNow(p.Namespace, p.Name, p.UID)
		}
		return
	}
	if w != nil || a.ignored[p.UID] || terminal(p) {
		return
	}
	w = a.newWorker(p)
	a.workers[p.UID] = w
	go w.run()
}

// forget handles a pod that left the API: kill what is left and clean its folder.
func (a *agent) forget(p *corev1.Pod) {
	a.mu.Lock()
	w := a.workers[p.UID]
	delete(a.workers, p.UID)
	delete(a.deleting, p.UID)
	delete(a.ignored, p.UID)
	stopping := a.stopping
	a.mu.Unlock()
	dir := filepath.Join(a.opts.root, "pods", string(p.UID))
	if w == nil {
		if !stopping {
			_ = os.RemoveAll(dir)
		}
		return
	}
	w.gone.Store(true)
	w.requestDelete(0)
	go func() {
		<-w.done
		if !stopping {
			_ = os.RemoveAll(dir)
		}
	}()
}

// ---------------------------------------------------------------- provisioner

const provisionerName = "bpo.dev/podagent"

// startProvisioner makes sure the StorageClass exists and binds a hostPath PV to every pending PVC
// of that class (or of no class), see the package doc. Released PVs it made are deleted (the data
// stays on disk).
func (a *agent) startProvisioner(ctx context.Context) error {
	sc := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: a.opts.storageClass},
		Provisioner:       provisionerName,
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimRetain),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}
	if a.opts.defaultClass {
		sc.Annotations = map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}
	}
	if _, err := a.cs.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	f := informers.NewSharedInformerFactory(a.cs, 30*time.Second)
	pvcs := f.Core().V1().PersistentVolumeClaims().Informer()
	pvs := f.Core().V1().PersistentVolumes().Informer()
	if _, err := pvcs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.provision(ctx, obj.(*corev1.PersistentVolumeClaim)) },
		UpdateFunc: func(_, obj any) { a.provision(ctx, obj.(*corev1.PersistentVolumeClaim)) },
	}); err != nil {
		return err
	}
	if _, err := pvs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.reclaim(ctx, obj.(*corev1.PersistentVolume)) },
		UpdateFunc: func(_, obj any) { a.reclaim(ctx, obj.(*corev1.PersistentVolume)) },
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pvcs.HasSynced, pvs.HasSynced) {
		return fmt.Errorf("pvc/pv informers did not sync")
	}
	return nil
}

func (a *agent) provision(ctx context.Context, pvc *corev1.PersistentVolumeClaim) {
	if pvc.Status.Phase != corev1.ClaimPending || pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil {
		return
	}
	class := ptr.Deref(pvc.Spec.StorageClassName, "")
	if class != "" && class != a.opts.storageClass {
		return
	}
	name := "pvc-" + string(pvc.UID)
	dir := filepath.Join(a.opts.root, "pvc", pvc.Namespace, pvc.Name)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		a.log.Error("provisioning", "pvc", pvc.Namespace+"/"+pvc.Name, "err", err)
		return
	}
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	modes := pvc.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{"bpo.dev/podagent-node": a.opts.nodeName},
			Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": provisionerName},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   modes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
			VolumeMode:                    pvc.Spec.VolumeMode,
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: dir, Type: ptr.To(corev1.HostPathDirectoryOrCreate)}},
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{a.opts.nodeName}}},
			}}}},
		},
	}
	_, err := a.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return
	}
	if err != nil {
		a.log.Error("creating PV", "pvc", pvc.Namespace+"/"+pvc.Name, "err", err)
		return
	}
	a.log.Info("provisioned PV", "pv", name, "pvc", pvc.Namespace+"/"+pvc.Name, "path", dir)
}

func (a *agent) reclaim(ctx context.Context, pv *corev1.PersistentVolume) {
	if pv.Status.Phase != corev1.VolumeReleased || pv.Annotations["pv.kubernetes.io/provisioned-by"] != provisionerName ||
		pv.Labels["bpo.dev/podagent-node"] != a.opts.nodeName || pv.DeletionTimestamp != nil {
		return
	}
	err := a.cs.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		a.log.Error("deleting released PV", "pv", pv.Name, "err", err)
		return
	}
	a.log.Info("deleted released PV (data kept)", "pv", pv.Name)
}
