// Package v1alpha1 holds the telcolb.io/v1alpha1 custom resources that
// configure VIP pools and their advertisement: IPPool, BGPPeer and
// Advertisement. All three are cluster-scoped. The controller turns them
// into allocator pools and into one api.AdvertisementConfig per node; each
// object reports in its Valid condition whether it is used, naming the field
// when it is not.
//
// +kubebuilder:object:generate=true
// +groupName=telcolb.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of these resources.
var GroupVersion = schema.GroupVersion{Group: "telcolb.io", Version: "v1alpha1"}

// AddToScheme registers the types with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&IPPool{}, &IPPoolList{},
		&BGPPeer{}, &BGPPeerList{},
		&Advertisement{}, &AdvertisementList{},
	)
	metav1AddToGroupVersion(s)
	return nil
}

// Condition types and reasons shared by the three resources.
const (
	// ConditionValid is True when the object is used as written; False
	// says which field keeps it out and why.
	ConditionValid = "Valid"
	ReasonValid    = "Valid"
	// ReasonInvalid: a field's value cannot be used (parse error, family
	// mismatch, conflicting setting).
	ReasonInvalid = "InvalidField"
	// ReasonOverlap: an IPPool's addresses overlap another pool's.
	ReasonOverlap = "Overlap"
	// ReasonNotFound: a name the object refers to (IPPool, BGPPeer, Secret)
	// does not exist.
	ReasonNotFound = "NotFound"
)
