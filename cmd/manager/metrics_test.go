package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/bpo-dev/bpo/controllers/testutil"
)

// The metrics tests run against one envtest control plane (etcd + kube-apiserver from
// KUBEBUILDER_ASSETS): the API server does the TokenReviews and SubjectAccessReviews.
var env struct {
	testEnv *envtest.Environment
	cfg     *rest.Config
	cs      *kubernetes.Clientset
	reason  string // why envtest is unavailable
}

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "cmd/manager: KUBEBUILDER_ASSETS is unset under CI")
			os.Exit(1)
		}
		env.reason = "KUBEBUILDER_ASSETS is unset: envtest tests skipped"
		os.Exit(m.Run())
	}
	var err error
	env.testEnv, env.cfg, err = testutil.StartEnvtest(func() *envtest.Environment {
		return &envtest.Environment{
			CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
			ErrorIfCRDPathMissing: true,
		}
	}, 3)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cmd/manager: starting envtest: %v\n", err)
		os.Exit(1)
	}
	env.cs = kubernetes.NewForConfigOrDie(env.cfg)
	code := m.Run()
	if err := env.testEnv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "cmd/manager: stopping envtest: %v\n", err)
	}
	os.Exit(code)
}

func requireEnv(t *testing.T) {
	t.Helper()
	if env.reason != "" {
		t.Skip(env.reason)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// readManifest decodes a file of config/rbac strictly into obj.
func readManifest(t *testing.T, name string, obj any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", name))
	must(t, err)
	must(t, yaml.UnmarshalStrict(b, obj))
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().String()
	must(t, l.Close())
	return addr
}

// parseOptions parses manager flags the way main does.
func parseOptions(t *testing.T, args ...string) *options {
	t.Helper()
	var o options
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	o.bind(fs)
	must(t, fs.Parse(args))
	must(t, o.validate())
	return &o
}

// bindClusterRole creates a copy of a config/rbac ClusterRole (under a unique name) bound to subject.
func bindClusterRole(t *testing.T, file, name string, subject rbacv1.Subject) {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.ClusterRole{}
	readManifest(t, file, role)
	role.Name = name
	_, err := env.cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
	must(t, err)
	_, err = env.cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{subject},
	}, metav1.CreateOptions{})
	must(t, err)
}

// serviceAccountToken creates a ServiceAccount and returns a token for it (TokenRequest).
func serviceAccountToken(t *testing.T, ns, name string) string {
	t.Helper()
	ctx := context.Background()
	_, err := env.cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	must(t, err)
	tr, err := env.cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))},
	}, metav1.CreateOptions{})
	must(t, err)
	return tr.Status.Token
}

// scrape GETs url with an optional bearer token; it returns the status code and body.
func scrape(t *testing.T, c *http.Client, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	must(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp.StatusCode, string(body)
}

// insecureClient trusts any certificate: the manager's default certificate is self-signed.
func insecureClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the server's self-signed certificate
	}}
}

// TestSecureMetrics builds and starts the manager from its flags as main does, running as a
// user that holds only the checked-in RBAC (the manager role and the metrics-auth role), and
// scrapes /metrics over HTTPS: anonymous -> 401, a ServiceAccount without the metrics-reader
// binding -> 403, with it -> 200 and the controller's bpo_ metrics.
func TestSecureMetrics(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	ns, err := env.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "metrics-"}}, metav1.CreateOptions{})
	must(t, err)

	const user = "bpo-manager-metrics-test"
	managerSubject := rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}
	bindClusterRole(t, "role.yaml", user, managerSubject)
	bindClusterRole(t, "metrics_auth_role.yaml", user+"-metrics-auth", managerSubject)
	authn, err := env.testEnv.AddUser(envtest.User{Name: user}, env.cfg)
	must(t, err)

	addr := freeAddr(t)
	o := parseOptions(t, "--metrics-bind-address="+addr, "--health-probe-bind-address=0", "--watch-namespaces="+ns.Name,
		"--stage-cpu-request=250m")
	if !o.metrics.secure {
		t.Fatal("--metrics-secure defaults to false")
	}
	mgr, err := newManager(authn.Config(), o)
	must(t, err)
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// A run, so that the controller's per-namespace gauge has a series.
	c, err := client.New(env.cfg, client.Options{Scheme: mgr.GetScheme()})
	must(t, err)
	must(t, c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns.Name}}))
	must(t, c.Create(ctx, testutil.MakeRun(ns.Name, "scraped").Obj()))

	stranger := serviceAccountToken(t, ns.Name, "stranger")
	scraper := serviceAccountToken(t, ns.Name, "scraper")
	bindClusterRole(t, "metrics_reader_role.yaml", "bpo-metrics-reader-"+ns.Name,
		rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "scraper", Namespace: ns.Name})

	url := "https://" + addr + "/metrics"
	hc := insecureClient()
	var code int
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := hc.Get(url); err == nil { // the server is up
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics server at %s not up", url)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if code, body = scrape(t, hc, url, ""); code != http.StatusUnauthorized {
		t.Errorf("anonymous scrape: %d %.300q, want 401", code, body)
	}
	// The API server answers a TokenReview of a malformed token with an error, which
	// controller-runtime's filter turns into a 500: refused either way.
	if code, body = scrape(t, hc, url, "not-a-token"); code != http.StatusUnauthorized && code != http.StatusInternalServerError {
		t.Errorf("scrape with an invalid token: %d %.300q, want 401 or 500", code, body)
	}
	if code, body = scrape(t, hc, url, stranger); code != http.StatusForbidden {
		t.Errorf("scrape by a ServiceAccount without the metrics-reader binding: %d %.300q, want 403", code, body)
	}
	if strings.Contains(body, "bpo_") {
		t.Errorf("a refused scrape returned metrics")
	}
	for {
		code, body = scrape(t, hc, url, scraper)
		if code == http.StatusOK && strings.Contains(body, `bpo_alignmentruns{namespace="`+ns.Name+`",state="Running"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("scrape by the metrics-reader ServiceAccount: %d, no Running run of %s in:\n%.2000s", code, ns.Name, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(body, "controller_runtime_reconcile_total") {
		t.Errorf("controller-runtime metrics missing from an authorized scrape")
	}

	// The stage resource flags reach the Jobs.
	job := &batchv1.Job{}
	must(t, c.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "scraped-p1-sample"}, job))
	res := job.Spec.Template.Spec.Containers[0].Resources
	if res.Requests.Cpu().String() != "250m" || res.Requests.Memory().String() != "256Mi" || res.Limits.Memory().String() != "2Gi" {
		t.Errorf("sample Job resources %v / %v, want the flags' 250m CPU and the default memory", res.Requests, res.Limits)
	}

	// Plain HTTP on the HTTPS port gets no metrics (a 400 or a reset connection).
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	must(t, err)
	req.Header.Set("Authorization", "Bearer "+scraper)
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || strings.Contains(string(b), "bpo_") {
			t.Errorf("plain HTTP on the metrics port: %s %.200q", resp.Status, b)
		}
	}
}

// startMetricsServer starts the metrics server alone, from the manager's metrics flags.
func startMetricsServer(t *testing.T, args ...string) string {
	t.Helper()
	addr := freeAddr(t)
	o := parseOptions(t, append([]string{"--metrics-bind-address=" + addr}, args...)...)
	opts, watcher, err := o.metrics.serverOptions()
	must(t, err)
	httpClient, err := rest.HTTPClientFor(env.cfg)
	must(t, err)
	srv, err := metricsserver.NewServer(opts, env.cfg, httpClient)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	if watcher != nil {
		go func() { done <- watcher.Start(ctx) }()
	}
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if watcher != nil {
			<-done
		}
	})
	return addr
}

// waitUp polls until the server answers at all.
func waitUp(t *testing.T, c *http.Client, url string) *http.Response {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMetricsCertificateAndPlainHTTP: --metrics-cert-path serves the given certificate (a client
// that trusts only it connects); a missing certificate is a start-up error naming the flag;
// HTTP/2 is off unless --enable-http2; --metrics-secure=false is plain HTTP without
// authentication (what a host process that must be scraped without a token would pass).
func TestMetricsCertificateAndPlainHTTP(t *testing.T) {
	requireEnv(t)
	t.Run("provided certificate", func(t *testing.T) {
		dir := t.TempDir()
		cert, key, err := certutil.GenerateSelfSignedCertKey("bpo-metrics.test", []net.IP{{127, 0, 0, 1}}, nil)
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, "cert.pem"), cert, 0o600))
		must(t, os.WriteFile(filepath.Join(dir, "key.pem"), key, 0o600))
		addr := startMetricsServer(t, "--metrics-cert-path="+dir, "--metrics-cert-name=cert.pem", "--metrics-cert-key=key.pem")
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cert) {
			t.Fatal("bad test certificate")
		}
		trusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
		resp := waitUp(t, trusting, "https://"+addr+"/metrics")
		if resp.StatusCode != http.StatusUnauthorized || resp.Proto != "HTTP/1.1" {
			t.Errorf("anonymous scrape with the provided certificate: %s %s, want 401 over HTTP/1.1", resp.Proto, resp.Status)
		}
	})
	t.Run("missing certificate", func(t *testing.T) {
		o := parseOptions(t, "--metrics-cert-path="+t.TempDir())
		if _, _, err := o.metrics.serverOptions(); err == nil || !strings.Contains(err.Error(), "--metrics-cert-path") {
			t.Errorf("missing certificate files: error %v, want one naming --metrics-cert-path", err)
		}
	})
	t.Run("http2 on request", func(t *testing.T) {
		addr := startMetricsServer(t, "--enable-http2")
		c := insecureClient()
		c.Transport.(*http.Transport).ForceAttemptHTTP2 = true
		if resp := waitUp(t, c, "https://"+addr+"/metrics"); resp.Proto != "HTTP/2.0" {
			t.Errorf("--enable-http2: %s", resp.Proto)
		}
	})
	t.Run("insecure", func(t *testing.T) {
		addr := startMetricsServer(t, "--metrics-secure=false")
		resp := waitUp(t, &http.Client{Timeout: 10 * time.Second}, "http://"+addr+"/metrics")
		if resp.StatusCode != http.StatusOK {
			t.Errorf("--metrics-secure=false: %s, want 200 over plain HTTP", resp.Status)
		}
	})
}
