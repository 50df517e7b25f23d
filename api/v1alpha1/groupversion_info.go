// Package v1alpha1 holds the alignment.bpo.dev/v1alpha1 API: the AlignmentRun custom resource
// (one BPO / online-DAP alignment run) and StageResult, the document a stage pod reports back.
//
// The package depends only on k8s.io/api and k8s.io/apimachinery so that the `bpo` stage binary
// and the local runner can import it without controller-runtime.
//
// +kubebuilder:object:generate=true
// +groupName=alignment.bpo.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of this package.
	GroupVersion = schema.GroupVersion{Group: "alignment.bpo.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the package's types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the package's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion, &AlignmentRun{}, &AlignmentRunList{})
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
