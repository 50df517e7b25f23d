//go:build cgo

package blas

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

// TestFallbackWarns: a cgo build that cannot load OpenBLAS falls back to gonum and says so on
// stderr, once, naming the package to install; BPO_BLAS=gonum chooses gonum without a word.
func TestFallbackWarns(t *testing.T) {
	saved := openBLAS
	t.Cleanup(func() { openBLAS = saved })
	openBLAS = func() (*engine, error) { return nil, errors.New("libopenblas.so.0 not loaded: fallback test") }
	stderr := func(f func()) string {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		old := os.Stderr
		os.Stderr = w
		f()
		os.Stderr = old
		w.Close()
		out, _ := io.ReadAll(r)
		return string(out)
	}
	for _, tc := range []struct {
		env   string
		warns int
	}{{"", 1}, {"gonum", 0}} {
		t.Setenv("BPO_BLAS", tc.env)
		var names []string
		out := stderr(func() {
			for range 2 {
				names = append(names, chooseEngine().name)
			}
		})
		if names[0] != "gonum" || names[1] != "gonum" {
			t.Errorf("BPO_BLAS=%q: engines %v, want gonum", tc.env, names)
		}
		if n := strings.Count(out, "libopenblas0-pthread"); n != tc.warns {
			t.Errorf("BPO_BLAS=%q: %d warnings naming the package, want %d:\n%s", tc.env, n, tc.warns, out)
		}
	}
}

// TestSetenvReachesC: os.Setenv reaches the C library's environment (where OpenBLAS's constructor
// reads OPENBLAS_CORETYPE), and the core type the binary chose is what the library reads.
func TestSetenvReachesC(t *testing.T) {
	t.Setenv("BPO_BLAS_SETENV_PROBE", "visible-from-c")
	if got := cGetenv("BPO_BLAS_SETENV_PROBE"); got != "visible-from-c" {
		t.Fatalf("C getenv after os.Setenv = %q", got)
	}
	e, err := openBLAS()
	if err != nil {
		t.Skipf("no OpenBLAS: %v", err)
	}
	if got, goSide := cGetenv("OPENBLAS_CORETYPE"), os.Getenv("OPENBLAS_CORETYPE"); got != goSide {
		t.Errorf("OPENBLAS_CORETYPE: C sees %q, Go %q", got, goSide)
	}
	t.Logf("OPENBLAS_CORETYPE=%q, core %q, %s", os.Getenv("OPENBLAS_CORETYPE"), e.coreType, e.reason)
}

// TestMissingLibrary: a library that cannot be opened gives an error naming it, which becomes
// the gonum backend's Reason.
func TestMissingLibrary(t *testing.T) {
	saved := libNames
	defer func() { libNames = saved }()
	libNames = []string{"libbpo-no-such-blas.so.0"}
	e, err := loadOpenBLAS()
	if err == nil || e != nil || !strings.Contains(err.Error(), "libbpo-no-such-blas.so.0") {
		t.Fatalf("loadOpenBLAS() = %v, %v; want an error naming the library", e, err)
	}
	if g := newGonum(err.Error()); g.name != "gonum" || g.reason != err.Error() {
		t.Errorf("fallback engine %+v", g)
	}
	t.Log(err)
}
