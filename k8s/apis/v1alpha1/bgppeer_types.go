package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// BFDProfile holds the timers of the BFD session (RFC 5880; single hop,
// RFC 5881, or multihop, RFC 5883) bound to a BGP session: BFD down brings
// the BGP session down.
type BFDProfile struct {
	// ReceiveIntervalMs is the required minimum receive interval.
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	// +kubebuilder:default=300
	// +optional
	ReceiveIntervalMs uint32 `json:"receiveIntervalMs,omitempty"`
	// TransmitIntervalMs is the desired minimum transmit interval.
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	// +kubebuilder:default=300
	// +optional
	TransmitIntervalMs uint32 `json:"transmitIntervalMs,omitempty"`
	// DetectMultiplier intervals without a packet make the session down.
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	// +kubebuilder:default=3
	// +optional
	DetectMultiplier uint32 `json:"detectMultiplier,omitempty"`
	// Multihop runs the session per RFC 5883 (port 4784) for a peer that
	// is not directly connected; ebgpMultihop peers get one anyway.
	// +optional
	Multihop bool `json:"multihop,omitempty"`
	// MinimumTTL is the lowest TTL a multihop session accepts (default
	// 254: one router between the peers); single hop always requires 255.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	// +optional
	MinimumTTL uint32 `json:"minimumTTL,omitempty"`
}

// SecretKeyRef names a key of a Secret in the controller's namespace.
type SecretKeyRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key defaults to "password".
	// +kubebuilder:default=password
	// +optional
	Key string `json:"key,omitempty"`
}

// BGPPeerSpec is one BGP neighbour of the selected nodes.
//
// +kubebuilder:validation:XValidation:rule="!has(self.holdTimeSeconds) || !has(self.keepaliveTimeSeconds) || self.keepaliveTimeSeconds < self.holdTimeSeconds",message="keepaliveTimeSeconds must be less than holdTimeSeconds",fieldPath=".keepaliveTimeSeconds"
type BGPPeerSpec struct {
	// Address is the neighbour's IPv4 or IPv6 address.
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
	// +kubebuilder:validation:MaxLength=64
	Address string `json:"address"`
	// ASN is the neighbour's AS number.
	// +kubebuilder:validation:Minimum=1
	ASN uint32 `json:"asn"`
	// MyASN is the nodes' AS number toward this peer (equal to asn means
	// iBGP). Every peer of one node must use the same myASN.
	// +kubebuilder:validation:Minimum=1
	MyASN uint32 `json:"myASN"`
	// Port defaults to 179.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
	// HoldTimeSeconds defaults to 90; 0 is not allowed (no keepalives).
	// +kubebuilder:validation:Minimum=3
	// +kubebuilder:validation:Maximum=65535
	// +optional
	HoldTimeSeconds int32 `json:"holdTimeSeconds,omitempty"`
	// KeepaliveTimeSeconds defaults to a third of the hold time.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=21845
	// +optional
	KeepaliveTimeSeconds int32 `json:"keepaliveTimeSeconds,omitempty"`
	// SourceAddress is the local address of the session.
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
	// +kubebuilder:validation:MaxLength=64
	// +optional
	SourceAddress string `json:"sourceAddress,omitempty"`
	// EBGPMultihop allows an eBGP peer that is not directly connected.
	// +optional
	EBGPMultihop bool `json:"ebgpMultihop,omitempty"`
	// BFD runs a BFD session to the peer with these timers.
	// +optional
	BFD *BFDProfile `json:"bfd,omitempty"`
	// PasswordSecretRef enables TCP MD5 (RFC 2385) with the password held
	// in this Secret of the controller's namespace.
	// +optional
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`
	// NodeSelector chooses the nodes that peer; unset means every node.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
}

// BGPPeerStatus reports whether the peer is configured on the nodes.
type BGPPeerStatus struct {
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BGPPeer is a router the selected nodes announce their VIPs to.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=tlbpeer
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.address`
// +kubebuilder:printcolumn:name="ASN",type=integer,JSONPath=`.spec.asn`
// +kubebuilder:printcolumn:name="My-ASN",type=integer,JSONPath=`.spec.myASN`
// +kubebuilder:printcolumn:name="BFD",type=integer,JSONPath=`.spec.bfd.receiveIntervalMs`,priority=1
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BGPPeerSpec   `json:"spec"`
	Status BGPPeerStatus `json:"status,omitempty"`
}

// BGPPeerList is a list of BGPPeers.
//
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}
