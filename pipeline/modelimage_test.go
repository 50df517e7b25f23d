package pipeline

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// An oci:// model is read where the stage pod mounts the image (Env.ModelImageDir, the
// contract's /models/base); without a mounted image the error says what a local run needs.
func TestModelFromImage(t *testing.T) {
	vol := newVolume(t)
	byPath, err := makeRun("by-path").Env(t, vol).LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	b := makeRun("by-image")
	b.ar.Spec.Model = v1alpha1.ModelSpec{URI: "oci://example.com/models/tiny:v1"}
	e := b.Env(t, vol)
	e.ModelImageDir = filepath.Join(vol, "models/tiny") // where the kubelet would mount the image
	byImage, err := e.LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(byImage.Weights.Config, byPath.Weights.Config) ||
		!reflect.DeepEqual(byImage.Weights.Tensors["wte.weight"].Data, byPath.Weights.Tensors["wte.weight"].Data) {
		t.Error("the model read from the image mount differs from the same folder read by path")
	}

	local := makeRun("no-image")
	local.ar.Spec.Model = v1alpha1.ModelSpec{URI: "oci://example.com/models/tiny:v1"}
	_, err = local.Env(t, vol).LoadBase()
	if err == nil || !strings.Contains(err.Error(), "spec.model.uri oci://example.com/models/tiny:v1") || !strings.Contains(err.Error(), "image volume") ||
		!strings.Contains(err.Error(), "spec.model.path") {
		t.Errorf("a local run of an image model: %v", err)
	}
}
