//go:build cgo

package blas

import (
	"os"
	"strings"
	"testing"
)

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
