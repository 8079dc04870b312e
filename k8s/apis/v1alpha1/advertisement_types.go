package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// AdvertisementSpec says how the VIPs of some pools are announced, and from
// which nodes.
//
// +kubebuilder:validation:XValidation:rule="self.mode == 'l2' || !has(self.interfaces)",message="interfaces are for mode l2",fieldPath=".interfaces"
// +kubebuilder:validation:XValidation:rule="self.mode == 'bgp' || (!has(self.peers) && !has(self.communities) && !has(self.localPreference) && !has(self.med) && !has(self.aggregationLength) && !has(self.aggregationLengthV6))",message="peers, communities, localPreference, med and aggregation lengths are for mode bgp"
// +kubebuilder:validation:XValidation:rule="(has(self.ipPools) && size(self.ipPools) > 0) || has(self.ipPoolSelector)",message="set ipPools or ipPoolSelector"
type AdvertisementSpec struct {
	// Mode is bgp (routes to the BGPPeers) or l2 (one node answers ARP/NDP
	// for each VIP).
	// +kubebuilder:validation:Enum=bgp;l2
	Mode string `json:"mode"`
	// IPPools names the pools whose VIPs are announced (IPPool objects or
	// pools of the controller's flags / pool file).
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	IPPools []string `json:"ipPools,omitempty"`
	// IPPoolSelector selects IPPool objects by label, in addition to ipPools.
	// +optional
	IPPoolSelector *metav1.LabelSelector `json:"ipPoolSelector,omitempty"`
	// NodeSelector chooses the nodes that announce; unset means every node.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// Peers limits a bgp advertisement to these BGPPeers; empty means every
	// peer of the node.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	Peers []string `json:"peers,omitempty"`
	// Communities are standard ("65000:100") or large ("65000:1:2") BGP
	// communities attached to the routes.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +kubebuilder:validation:items:Pattern=`^[0-9]{1,10}:[0-9]{1,10}(:[0-9]{1,10})?$`
	Communities []string `json:"communities,omitempty"`
	// LocalPreference is sent to iBGP peers.
	// +optional
	LocalPreference *uint32 `json:"localPreference,omitempty"`
	// MED ranks the nodes for eBGP peers (lower wins).
	// +optional
	MED *uint32 `json:"med,omitempty"`
	// AggregationLength announces the covering IPv4 prefix of this length
	// instead of each VIP's /32.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=32
	// +optional
	AggregationLength *int32 `json:"aggregationLength,omitempty"`
	// AggregationLengthV6 is the same for IPv6 (instead of /128).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=128
	// +optional
	AggregationLengthV6 *int32 `json:"aggregationLengthV6,omitempty"`
	// Interfaces limits an l2 advertisement to these node interfaces;
	// empty means every interface the datapath is attached to.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z0-9._@:-]{1,15}$`
	Interfaces []string `json:"interfaces,omitempty"`
}

// AdvertisementStatus reports whether the advertisement is configured.
type AdvertisementStatus struct {
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Advertisement announces the VIPs of some pools by BGP or L2.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=tlbadv
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipPools`
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Advertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AdvertisementSpec   `json:"spec"`
	Status AdvertisementStatus `json:"status,omitempty"`
}

// AdvertisementList is a list of Advertisements.
//
// +kubebuilder:object:root=true
type AdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Advertisement `json:"items"`
}
