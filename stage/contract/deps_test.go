package contract

import (
	"go/build"
	"strings"
	"testing"
)

// TestLeaf keeps the package a leaf that the controller can import: the standard library,
// api/v1alpha1 and pflag only (never pipeline, trainer or a Kubernetes client).
func TestLeaf(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"github.com/bpo-dev/bpo/api/v1alpha1": true, "github.com/spf13/pflag": true}
	for _, imp := range pkg.Imports {
		if !allowed[imp] && strings.Contains(strings.Split(imp, "/")[0], ".") {
			t.Errorf("imports %s: the stage contract is a leaf (standard library, api/v1alpha1, pflag)", imp)
		}
	}
}
