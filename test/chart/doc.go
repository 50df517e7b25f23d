// Package chart holds the packaging tests (test-only): the Helm chart charts/bpo-operator
// (helm lint, helm template over a values matrix, CRD and RBAC copies in sync with config/,
// server-side dry-run of every rendered object and of `kubectl kustomize config/default`
// against a real kube-apiserver, helm install/upgrade/uninstall), the two Dockerfiles (parsed,
// and their build reproduced without Docker), and the Argo CD health check and actions in
// config/argocd (run with gopher-lua, the Lua VM Argo CD embeds).
//
// Tools: helm comes from $HELM, the pinned copy in ${BPO_CACHE:-~/.cache/bpo}/bin, or PATH;
// under CI (CI set) `hack/tools.sh helm` installs it. The API server comes from
// KUBEBUILDER_ASSETS (`hack/k8s-binaries.sh --only envtest`). Outside CI a missing tool skips the
// tests that need it; under CI it fails them.
package chart
