// Package e2e holds end-to-end tests against a real control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler built from source, started by hack/e2e-cluster.sh) whose
// single node is served by test/e2e/podagent, which runs pod containers as local processes.
//
// TestFaults (faults_test.go) drives one small AlignmentRun per fault: the manager SIGKILLed
// mid-stage, a stage pod evicted, a running stage Job deleted, a sample shard truncated between
// sampling and labelling; each is checked by counting the workspace's rows.
//
// The tests carry the build tag e2e, so `go test ./...` skips them:
//
//	go test -tags e2e -v -timeout 30m ./test/e2e/
//
// Environment: E2E_DIR (state folder; default a new temp dir), E2E_KEEP=1 (keep it; it is also kept
// when a test fails), K8S_BIN_DIR (control-plane binaries; default: hack/k8s-binaries.sh).
package e2e
