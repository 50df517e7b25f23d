package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"path/filepath"

	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// metricsFlags configure the metrics endpoint. By default it is HTTPS (a self-signed certificate
// unless --metrics-cert-path names one) and every request must carry a bearer token that the API
// server accepts (TokenReview) for a subject allowed to `get` the non-resource URL /metrics
// (SubjectAccessReview): the metrics-reader ClusterRole of config/rbac and of the chart.
type metricsFlags struct {
	bindAddress string
	secure      bool
	certPath    string
	certName    string
	certKey     string
	enableHTTP2 bool
}

func (m *metricsFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&m.bindAddress, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to (HTTPS with --metrics-secure, else HTTP); \"0\" disables it.")
	fs.BoolVar(&m.secure, "metrics-secure", true, "Serve /metrics over HTTPS and only to bearer tokens allowed to get /metrics (TokenReview + SubjectAccessReview). false: plain HTTP, no authentication.")
	fs.StringVar(&m.certPath, "metrics-cert-path", "", "Directory holding the metrics server's certificate and key (reloaded on change). Empty: a self-signed certificate generated at start.")
	fs.StringVar(&m.certName, "metrics-cert-name", "tls.crt", "File name of the metrics server certificate in --metrics-cert-path.")
	fs.StringVar(&m.certKey, "metrics-cert-key", "tls.key", "File name of the metrics server key in --metrics-cert-path.")
	fs.BoolVar(&m.enableHTTP2, "enable-http2", false, "Allow HTTP/2 on the metrics endpoint (off: HTTP/1.1 only, which is not exposed to the HTTP/2 Rapid Reset and Stream Cancellation attacks).")
}

// serverOptions builds the metrics server's options, as main passes them to the manager. The
// certificate watcher (nil without --metrics-cert-path) must run with the manager (mgr.Add): it
// reloads a renewed certificate.
func (m *metricsFlags) serverOptions() (metricsserver.Options, *certwatcher.CertWatcher, error) {
	opts := metricsserver.Options{BindAddress: m.bindAddress, SecureServing: m.secure}
	if !m.secure || m.bindAddress == "0" {
		return opts, nil, nil
	}
	opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	if !m.enableHTTP2 {
		opts.TLSOpts = append(opts.TLSOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	if m.certPath == "" {
		return opts, nil, nil // controller-runtime generates a self-signed certificate in memory
	}
	cert, key := filepath.Join(m.certPath, m.certName), filepath.Join(m.certPath, m.certKey)
	w, err := certwatcher.New(cert, key)
	if err != nil {
		return opts, nil, fmt.Errorf("--metrics-cert-path: loading the metrics certificate %s and key %s: %w (mount a kubernetes.io/tls Secret there, or leave the flag empty for a self-signed certificate)", cert, key, err)
	}
	opts.TLSOpts = append(opts.TLSOpts, func(c *tls.Config) { c.GetCertificate = w.GetCertificate })
	return opts, w, nil
}
