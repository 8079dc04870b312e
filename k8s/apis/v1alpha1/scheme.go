package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// metav1AddToGroupVersion registers the meta types (ListOptions, ...) the
// clients need for this group version.
func metav1AddToGroupVersion(s *runtime.Scheme) {
	metav1.AddToGroupVersion(s, GroupVersion)
}
