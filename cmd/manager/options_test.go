package main

import (
	"flag"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/bpo-dev/bpo/controllers"
)

func TestStageResourceFlags(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		args    []string
		want    string // requests/limits as "cpu=..,memory=..|memory=.."
		wantErr string
	}{
		"defaults": {want: "cpu=100m,memory=256Mi|memory=2Gi"},
		"override and disable": {args: []string{"--stage-cpu-request=1", "--stage-memory-request=", "--stage-memory-limit=", "--stage-cpu-limit=4"},
			want: "cpu=1|cpu=4"},
		"not a quantity":         {args: []string{"--stage-memory-limit=lots"}, wantErr: `--stage-memory-limit="lots"`},
		"zero":                   {args: []string{"--stage-cpu-request=0"}, wantErr: "--stage-cpu-request"},
		"request above limit":    {args: []string{"--stage-memory-request=4Gi"}, wantErr: "--stage-memory-request (4Gi) is above --stage-memory-limit (2Gi)"},
		"progress url":           {args: []string{"--progress-url=http://bpo-progress.bpo-system.svc:8082"}, want: "cpu=100m,memory=256Mi|memory=2Gi"},
		"progress url not a url": {args: []string{"--progress-url=bpo-progress:8082"}, wantErr: `--progress-url "bpo-progress:8082": want an http(s) URL`},
		"progress url without an endpoint": {args: []string{"--progress-url=http://x:8082", "--progress-bind-address=0"},
			wantErr: "--progress-bind-address=0 serves no endpoint"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var o options
			fs := flag.NewFlagSet("manager", flag.ContinueOnError)
			o.bind(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := o.validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r, err := o.stageResources.requirements()
			if err != nil {
				t.Fatal(err)
			}
			show := func(l corev1.ResourceList) string {
				var parts []string
				for _, n := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					if q, ok := l[n]; ok {
						parts = append(parts, string(n)+"="+q.String())
					}
				}
				return strings.Join(parts, ",")
			}
			if got := show(r.Requests) + "|" + show(r.Limits); got != tc.want {
				t.Errorf("resources %s, want %s", got, tc.want)
			}
		})
	}
}

// TestVersionFromLdflags: a release build's -X value reaches the default stage image (it is
// computed from controllers.Version at start-up, not frozen at compile time), and a plain
// build names the pinned default, never :latest.
func TestVersionFromLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the manager")
	}
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "manager")
	build := exec.Command("go", "build", "-ldflags", "-X github.com/bpo-dev/bpo/controllers.Version=9.9.9-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("manager --version: %v\n%s", err, out)
	}
	if want := "manager 9.9.9-test (default stage image ghcr.io/bpo-dev/bpo:9.9.9-test)"; strings.TrimSpace(string(out)) != want {
		t.Errorf("--version: %q, want %q", out, want)
	}
	if d := controllers.DefaultStageImage; d != controllers.StageImageRepository+":"+controllers.Version || strings.HasSuffix(d, ":latest") {
		t.Errorf("DefaultStageImage %q", d)
	}
}
