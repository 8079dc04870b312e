package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// IPRange is an inclusive run of addresses of one family.
type IPRange struct {
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
	// +kubebuilder:validation:MaxLength=64
	Start string `json:"start"`
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
	// +kubebuilder:validation:MaxLength=64
	End string `json:"end"`
}

// IPPoolSpec says which addresses the pool hands out and to whom.
//
// +kubebuilder:validation:XValidation:rule="(has(self.cidrs) && size(self.cidrs) > 0) || (has(self.ranges) && size(self.ranges) > 0)",message="set at least one of cidrs or ranges"
type IPPoolSpec struct {
	// CIDRs of IPv4 or IPv6 VIPs. An IPv4 CIDR shorter than /31 leaves out
	// its network and broadcast addresses, an IPv6 one shorter than /127
	// its subnet-router anycast address.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="must be a CIDR such as 192.0.2.0/24 or 2001:db8::/120"
	// +kubebuilder:validation:items:MaxLength=64
	CIDRs []string `json:"cidrs,omitempty"`
	// Ranges of VIPs, start and end included, taken exactly.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	Ranges []IPRange `json:"ranges,omitempty"`
	// AutoAssign lets Services without a telcolb.io/poolSelect annotation
	// get addresses from this pool (when the controller's default pool does
	// not exist or does not allow them). Default true; ignored for
	// secondaryOnly pools.
	// +kubebuilder:default=true
	// +optional
	AutoAssign *bool `json:"autoAssign,omitempty"`
	// AvoidBuggyIPs never hands out IPv4 addresses ending in .0 or .255,
	// which some clients and routers treat as network or broadcast
	// addresses, also inside ranges and CIDRs shorter than /24.
	// +optional
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`
	// SecondaryOnly pools only give SCTP secondary (multi-homing) VIPs
	// (telcolb.io/poolSelectSecondary), never a Service's primary VIP.
	// +optional
	SecondaryOnly bool `json:"secondaryOnly,omitempty"`
	// NamespaceSelector limits the pool to Services in namespaces whose
	// labels match; unset means every namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// ServiceSelector limits the pool to Services whose labels match; unset
	// means every Service.
	// +optional
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`
}

// IPPoolStatus reports whether the pool is in use.
type IPPoolStatus struct {
	// Conditions: Valid (False with reason InvalidField or Overlap names
	// the field that keeps the pool out of the allocator).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// IPPool is a named set of VIPs Services can be given. The pool name is the
// object's name, which telcolb.io/poolSelect and poolSelectSecondary refer to.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=tlbpool
// +kubebuilder:printcolumn:name="CIDRs",type=string,JSONPath=`.spec.cidrs`
// +kubebuilder:printcolumn:name="Auto",type=boolean,JSONPath=`.spec.autoAssign`
// +kubebuilder:printcolumn:name="Secondary-Only",type=boolean,JSONPath=`.spec.secondaryOnly`
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="pool names are at most 63 characters"
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPPoolSpec   `json:"spec"`
	Status IPPoolStatus `json:"status,omitempty"`
}

// IPPoolList is a list of IPPools.
//
// +kubebuilder:object:root=true
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPPool `json:"items"`
}
