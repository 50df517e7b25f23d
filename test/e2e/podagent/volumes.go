package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// permanentError marks a pod configuration the agent can never run (the pod fails at once);
// other preparation errors (a missing ConfigMap, say) are retried like a kubelet does.
type permanentError struct{ error }

// pathMapping maps a path inside the "container" to a local path.
type pathMapping struct{ from, to string }

// isPathChar reports whether c can continue a path component (so "/workspace" must not match
// inside "/workspaces" or "/data/workspace").
func isPathChar(c byte) bool {
	return c == '/' || c == '.' || c == '_' || c == '-' || c == '~' || c == '+' ||
		(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// rewritePaths replaces every occurrence of a mapping's from-path used as a path prefix in s: the
// match must start s or follow a non-path character (space, '=', ':', quote, ...), and end s or be
// followed by '/' or a non-path character. Longer from-paths win. The result is not rescanned.
func rewritePaths(s string, maps []pathMapping) string {
	if len(maps) == 0 || s == "" {
		return s
	}
	var b strings.Builder
	i := 0
	for i < len(s) {
		matched := false
		if s[i] == '/' && (i == 0 || !isPathChar(s[i-1])) {
			for _, m := range maps { // sorted longest first
				if !strings.HasPrefix(s[i:], m.from) {
					continue
				}
				end := i + len(m.from)
				if end < len(s) && s[end] != '/' && isPathChar(s[end]) {
					continue
				}
				b.WriteString(m.to)
				i = end
				matched = true
				break
			}
		}
		if !matched {
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

func sortMappings(maps []pathMapping) {
	sort.SliceStable(maps, func(i, j int) bool { return len(maps[i].from) > len(maps[j].from) })
}

// expandVars implements Kubernetes' $(VAR) expansion in command, args and env values: $(VAR) is
// replaced when VAR is defined, left as is otherwise; $$ is an escaped $.
func expandVars(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// fieldRefValue resolves a downward-API field path against the pod.
func fieldRefValue(pod *corev1.Pod, hostIP, fieldPath string) (string, error) {
	if strings.HasPrefix(fieldPath, "metadata.labels[") || strings.HasPrefix(fieldPath, "metadata.annotations[") {
		open := strings.IndexByte(fieldPath, '[')
		key := strings.TrimSuffix(fieldPath[open+1:], "]")
		key = strings.Trim(key, `'"`)
		if strings.HasPrefix(fieldPath, "metadata.labels[") {
			return pod.Labels[key], nil
		}
		return pod.Annotations[key], nil
	}
	switch fieldPath {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs":
		return hostIP, nil
	}
	return "", permanentError{fmt.Errorf("unsupported fieldRef %q", fieldPath)}
}

// formatMap renders labels/annotations like the kubelet's downward API files.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q\n", k, m[k])
	}
	return b.String()
}

// resourceFieldValue resolves a resourceFieldRef (limits/requests of a container, node allocatable
// when no limit is set), rounded up in units of the divisor like the kubelet.
func (a *agent) resourceFieldValue(pod *corev1.Pod, ref *corev1.ResourceFieldSelector) (string, error) {
	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == ref.ContainerName {
			c = &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == ref.ContainerName {
			c = &pod.Spec.InitContainers[i]
		}
	}
	if c == nil {
		return "", permanentError{fmt.Errorf("resourceFieldRef: no container %q", ref.ContainerName)}
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", permanentError{fmt.Errorf("unsupported resourceFieldRef %q", ref.Resource)}
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		switch name {
		case "cpu":
			q = resource.MustParse(a.opts.cpu)
		case "memory":
			q = resource.MustParse(a.opts.memory)
		default:
			q = resource.MustParse("100Gi")
		}
	}
	div := ref.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	v := math.Ceil(float64(q.MilliValue()) / float64(div.MilliValue()))
	return fmt.Sprintf("%d", int64(v)), nil
}

func (a *agent) configMapKey(ctx context.Context, ns string, sel *corev1.ConfigMapKeySelector) (string, bool, error) {
	cm, err := a.cs.CoreV1().ConfigMaps(ns).Get(ctx, sel.Name, metav1.GetOptions{})
	optional := ptr.Deref(sel.Optional, false)
	if err != nil {
		if apierrors.IsNotFound(err) && optional {
			return "", false, nil
		}
		return "", false, fmt.Errorf("configmap %s/%s: %w", ns, sel.Name, err)
	}
	if v, ok := cm.Data[sel.Key]; ok {
		return v, true, nil
	}
	if v, ok := cm.BinaryData[sel.Key]; ok {
		return string(v), true, nil
	}
	if optional {
		return "", false, nil
	}
	return "", false, fmt.Errorf("configmap %s/%s has no key %q", ns, sel.Name, sel.Key)
}

func (a *agent) secretKey(ctx context.Context, ns string, sel *corev1.SecretKeySelector) (string, bool, error) {
	s, err := a.cs.CoreV1().Secrets(ns).Get(ctx, sel.Name, metav1.GetOptions{})
	optional := ptr.Deref(sel.Optional, false)
	if err != nil {
		if apierrors.IsNotFound(err) && optional {
			return "", false, nil
		}
		return "", false, fmt.Errorf("secret %s/%s: %w", ns, sel.Name, err)
	}
	if v, ok := s.Data[sel.Key]; ok {
		return string(v), true, nil
	}
	if optional {
		return "", false, nil
	}
	return "", false, fmt.Errorf("secret %s/%s has no key %q", ns, sel.Name, sel.Key)
}

// containerEnv resolves envFrom and env (values, fieldRef, resourceFieldRef, configMapKeyRef,
// secretKeyRef, $(VAR) expansion) into an ordered list of NAME=value. It does not rewrite paths.
func (a *agent) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]string, map[string]string, error) {
	vals := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, err := a.cs.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ef.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && ptr.Deref(ef.ConfigMapRef.Optional, false) {
					continue
				}
				return nil, nil, fmt.Errorf("envFrom configmap %s: %w", ef.ConfigMapRef.Name, err)
			}
			keys := sortedKeys(cm.Data)
			for _, k := range keys {
				set(ef.Prefix+k, cm.Data[k])
			}
		case ef.SecretRef != nil:
			s, err := a.cs.CoreV1().Secrets(pod.Namespace).Get(ctx, ef.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && ptr.Deref(ef.SecretRef.Optional, false) {
					continue
				}
				return nil, nil, fmt.Errorf("envFrom secret %s: %w", ef.SecretRef.Name, err)
			}
			keys := make([]string, 0, len(s.Data))
			for k := range s.Data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				set(ef.Prefix+k, string(s.Data[k]))
			}
		}
	}
	lookup := func(k string) (string, bool) { v, ok := vals[k]; return v, ok }
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expandVars(e.Value, lookup))
			continue
		}
		var v string
		var ok = true
		var err error
		switch vf := e.ValueFrom; {
		case vf.FieldRef != nil:
			v, err = fieldRefValue(pod, a.hostIP, vf.FieldRef.FieldPath)
		case vf.ResourceFieldRef != nil:
			ref := *vf.ResourceFieldRef
			if ref.ContainerName == "" {
				ref.ContainerName = c.Name
			}
			v, err = a.resourceFieldValue(pod, &ref)
		case vf.ConfigMapKeyRef != nil:
			v, ok, err = a.configMapKey(ctx, pod.Namespace, vf.ConfigMapKeyRef)
		case vf.SecretKeyRef != nil:
			v, ok, err = a.secretKey(ctx, pod.Namespace, vf.SecretKeyRef)
		default:
			err = permanentError{fmt.Errorf("env %s: unsupported valueFrom", e.Name)}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			set(e.Name, v)
		}
	}
	return order, vals, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// writeFile writes data to dir/rel (rel must stay inside dir).
func writeFile(dir, rel string, data []byte, mode *int32) error {
	clean := path.Clean("/" + rel)
	p := filepath.Join(dir, filepath.FromSlash(clean))
	if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
		return permanentError{fmt.Errorf("path %q escapes its volume", rel)}
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	m := os.FileMode(0o644)
	if mode != nil {
		m = os.FileMode(*mode) & 0o777
	}
	return os.WriteFile(p, data, m|0o200) // keep it writable for the owner so cleanup works
}

// writeKeys writes a ConfigMap's or Secret's data into dir, honouring items.
func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath, defaultMode *int32, optional bool, what string) error {
	if len(items) == 0 {
		for k, v := range data {
			if err := writeFile(dir, k, v, defaultMode); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return fmt.Errorf("%s has no key %q", what, it.Key)
		}
		mode := defaultMode
		if it.Mode != nil {
			mode = it.Mode
		}
		if err := writeFile(dir, it.Path, v, mode); err != nil {
			return err
		}
	}
	return nil
}

func (a *agent) writeConfigMap(ctx context.Context, ns, dir string, src *corev1.ConfigMapVolumeSource, items []corev1.KeyToPath, mode *int32) error {
	optional := ptr.Deref(src.Optional, false)
	cm, err := a.cs.CoreV1().ConfigMaps(ns).Get(ctx, src.Name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) && optional {
			return nil
		}
		return fmt.Errorf("configmap %s/%s: %w", ns, src.Name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return writeKeys(dir, data, items, mode, optional, "configmap "+src.Name)
}

func (a *agent) writeSecret(ctx context.Context, ns, dir, name string, items []corev1.KeyToPath, mode *int32, optional bool) error {
	s, err := a.cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) && optional {
			return nil
		}
		return fmt.Errorf("secret %s/%s: %w", ns, name, err)
	}
	return writeKeys(dir, s.Data, items, mode, optional, "secret "+name)
}

func (a *agent) writeDownwardAPI(pod *corev1.Pod, dir string, items []corev1.DownwardAPIVolumeFile, mode *int32) error {
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = fieldRefValue(pod, a.hostIP, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			v, err = a.resourceFieldValue(pod, it.ResourceFieldRef)
		}
		if err != nil {
			return err
		}
		m := mode
		if it.Mode != nil {
			m = it.Mode
		}
		if err := writeFile(dir, it.Path, []byte(v), m); err != nil {
			return err
		}
	}
	return nil
}

// serviceAccountToken requests a bound token for the pod's service account.
func (a *agent) serviceAccountToken(ctx context.Context, pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) ([]byte, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: p.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if p.Audience != "" {
		tr.Spec.Audiences = []string{p.Audience}
	}
	out, err := a.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for serviceaccount %s/%s: %w", pod.Namespace, sa, err)
	}
	return []byte(out.Status.Token), nil
}

// volumePaths materialises the pod's volumes and returns volume name -> local path.
func (a *agent) volumePaths(ctx context.Context, pod *corev1.Pod, podDir string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(podDir, "volumes", v.Name)
		switch {
		case v.PersistentVolumeClaim != nil:
			dir = filepath.Join(a.opts.root, "pvc", pod.Namespace, v.PersistentVolumeClaim.ClaimName)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
		case v.EmptyDir != nil:
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return nil, err
			}
		case v.HostPath != nil:
			dir = v.HostPath.Path
			if t := ptr.Deref(v.HostPath.Type, ""); t == corev1.HostPathDirectoryOrCreate {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return nil, err
				}
			}
		case v.ConfigMap != nil:
			if err := resetDir(dir); err != nil {
				return nil, err
			}
			if err := a.writeConfigMap(ctx, pod.Namespace, dir, v.ConfigMap, v.ConfigMap.Items, v.ConfigMap.DefaultMode); err != nil {
				return nil, err
			}
		case v.Secret != nil:
			if err := resetDir(dir); err != nil {
				return nil, err
			}
			if err := a.writeSecret(ctx, pod.Namespace, dir, v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode, ptr.Deref(v.Secret.Optional, false)); err != nil {
				return nil, err
			}
		case v.DownwardAPI != nil:
			if err := resetDir(dir); err != nil {
				return nil, err
			}
			if err := a.writeDownwardAPI(pod, dir, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode); err != nil {
				return nil, err
			}
		case v.Projected != nil:
			if err := resetDir(dir); err != nil {
				return nil, err
			}
			mode := v.Projected.DefaultMode
			for _, s := range v.Projected.Sources {
				var err error
				switch {
				case s.ConfigMap != nil:
					src := &corev1.ConfigMapVolumeSource{LocalObjectReference: s.ConfigMap.LocalObjectReference, Optional: s.ConfigMap.Optional}
					err = a.writeConfigMap(ctx, pod.Namespace, dir, src, s.ConfigMap.Items, mode)
				case s.Secret != nil:
					err = a.writeSecret(ctx, pod.Namespace, dir, s.Secret.Name, s.Secret.Items, mode, ptr.Deref(s.Secret.Optional, false))
				case s.DownwardAPI != nil:
					err = a.writeDownwardAPI(pod, dir, s.DownwardAPI.Items, mode)
				case s.ServiceAccountToken != nil:
					var tok []byte
					if tok, err = a.serviceAccountToken(ctx, pod, s.ServiceAccountToken); err == nil {
						err = writeFile(dir, s.ServiceAccountToken.Path, tok, ptr.To[int32](0o600))
					}
				default:
					a.log.Warn("ignoring unsupported projected source", "pod", pod.Namespace+"/"+pod.Name, "volume", v.Name)
				}
				if err != nil {
					return nil, err
				}
			}
		default:
			return nil, permanentError{fmt.Errorf("volume %q: unsupported volume type", v.Name)}
		}
		out[v.Name] = dir
	}
	return out, nil
}

func resetDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o755)
}

// mountMappings turns a container's volumeMounts into path mappings (subPath and subPathExpr
// honoured; subPath folders are created in directory volumes).
func mountMappings(c *corev1.Container, vols map[string]string, env map[string]string) ([]pathMapping, error) {
	var maps []pathMapping
	for _, m := range c.VolumeMounts {
		base, ok := vols[m.Name]
		if !ok {
			return nil, permanentError{fmt.Errorf("volumeMount %q: no such volume", m.Name)}
		}
		local := base
		sub := m.SubPath
		if m.SubPathExpr != "" {
			sub = expandVars(m.SubPathExpr, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		}
		if sub != "" {
			clean := path.Clean("/" + sub)
			if clean == "/" || strings.Contains(sub, "..") {
				return nil, permanentError{fmt.Errorf("volumeMount %q: bad subPath %q", m.Name, sub)}
			}
			local = filepath.Join(base, filepath.FromSlash(clean))
			if _, err := os.Stat(local); errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(local, 0o777); err != nil {
					return nil, err
				}
			}
		}
		mp := path.Clean(m.MountPath)
		if mp == "/" {
			return nil, permanentError{fmt.Errorf("volumeMount %q: mounting at / is not supported", m.Name)}
		}
		maps = append(maps, pathMapping{from: mp, to: local})
	}
	return maps, nil
}
