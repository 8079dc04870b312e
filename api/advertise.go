package api

// Advertisement resources: how a node makes the VIPs it serves reachable
// (BGP, L2). The controller builds one AdvertisementConfig per node from the
// IPPool / BGPPeer / Advertisement custom resources and PUTs it to
// /v1/advertisement; a node without the controller loads the same shape from
// the daemon's --advertisement-config YAML file. GET /v1/vips reports, per VIP
// this node serves, how it is announced; GET /v1/advertisement returns the
// configuration with the BGP and BFD session states.

// Advertisement modes accepted in Advertisement.Mode.
const (
	AdvertiseBGP = "bgp"
	AdvertiseL2  = "l2"
)

// AdvertisementConfig is a node's whole advertisement configuration. A PUT
// replaces it (level-triggered): what it no longer lists is withdrawn.
type AdvertisementConfig struct {
	// NodeName is this node's name (the Kubernetes node name under the
	// controller); it identifies the node in L2 ownership and in status.
	NodeName string `json:"nodeName"`
	// BGP configures the embedded speaker; nil means no BGP.
	BGP *BGPConfig `json:"bgp,omitempty"`
	// L2 configures ARP/NDP answering and the liveness between the nodes
	// that may own a VIP; nil means no L2 announcement.
	L2 *L2Config `json:"l2,omitempty"`
	// Advertisements say which VIPs are announced how. A VIP the node serves
	// that no advertisement covers is not announced.
	Advertisements []Advertisement `json:"advertisements,omitempty"`
	// Draining withdraws every VIP of the node while its services keep
	// running (established flows finish): BGP routes are withdrawn (the
	// sessions are re-established without them), and the node leaves the L2 group so the other
	// members take its VIPs over at once. The controller sets it while the
	// Node is cordoned (spec.unschedulable).
	Draining bool `json:"draining,omitempty"`
}

// BGPConfig is the embedded BGP speaker's identity and its peers.
type BGPConfig struct {
	// ASN is the local autonomous system number.
	ASN uint32 `json:"asn"`
	// RouterID is an IPv4 address; empty means the first IPv4 address of the node.
	RouterID string `json:"routerID,omitempty"`
	// ListenPort is the port the speaker accepts passive sessions on; 0 means
	// it does not listen (it only connects out), which lets several speakers
	// share a host or namespace in tests.
	ListenPort uint16 `json:"listenPort,omitempty"`
	// Peers are the routers this node announces to.
	Peers []BGPPeer `json:"peers,omitempty"`
}

// BGPPeer is one BGP neighbour.
type BGPPeer struct {
	// Name identifies the peer in status and in Advertisement.Peers.
	Name string `json:"name"`
	// Address is the neighbour's IPv4 or IPv6 address.
	Address string `json:"address"`
	// ASN is the neighbour's AS number (equal to BGPConfig.ASN means iBGP).
	ASN uint32 `json:"asn"`
	// Port defaults to 179.
	Port uint16 `json:"port,omitempty"`
	// HoldTimeSeconds defaults to 90; KeepaliveTimeSeconds to a third of it.
	HoldTimeSeconds      uint32 `json:"holdTimeSeconds,omitempty"`
	KeepaliveTimeSeconds uint32 `json:"keepaliveTimeSeconds,omitempty"`
	// SourceAddress, when set, is the local address the session uses.
	SourceAddress string `json:"sourceAddress,omitempty"`
	// Password enables TCP MD5 (RFC 2385) on the session. The controller
	// reads it from a Secret; it is never returned by GET.
	Password string `json:"password,omitempty"`
	// EBGPMultihop allows an eBGP peer that is not directly connected.
	EBGPMultihop bool `json:"ebgpMultihop,omitempty"`
	// BFD, when set, runs a BFD session (RFC 5880) to the peer: single hop
	// (RFC 5881), or multihop (RFC 5883) when EBGPMultihop or BFD.Multihop
	// is set; BFD down brings the BGP session down.
	BFD *BFDProfile `json:"bfd,omitempty"`
}

// BFDProfile holds a BFD session's timers.
type BFDProfile struct {
	// ReceiveIntervalMs is the required minimum receive interval (default 300, min 10).
	ReceiveIntervalMs uint32 `json:"receiveIntervalMs,omitempty"`
	// TransmitIntervalMs is the desired minimum transmit interval (default 300, min 10).
	TransmitIntervalMs uint32 `json:"transmitIntervalMs,omitempty"`
	// DetectMultiplier defaults to 3.
	DetectMultiplier uint32 `json:"detectMultiplier,omitempty"`
	// Multihop runs the session per RFC 5883 (port 4784, no TTL 255 rule)
	// for a peer that is not directly connected (an iBGP peer on a
	// loopback); a peer with ebgpMultihop gets a multihop session anyway.
	Multihop bool `json:"multihop,omitempty"`
	// MinimumTTL is the lowest TTL/hop limit a multihop session accepts
	// (default 254: one router between the peers, as frr); single-hop
	// sessions always require 255.
	MinimumTTL uint32 `json:"minimumTTL,omitempty"`
}

// L2Config configures L2 announcement: which interfaces answer ARP/NDP and
// which nodes may own a VIP. The owner of a VIP is chosen deterministically
// among the live members (a hash over node name and VIP); liveness is a
// heartbeat between the members that reacts in well under a second.
type L2Config struct {
	// Interfaces answer ARP / Neighbor Solicitation for owned VIPs; empty
	// means every interface the datapath is attached to.
	Interfaces []string `json:"interfaces,omitempty"`
	// Members are the nodes that may own the VIPs, this node included.
	Members []L2Member `json:"members"`
	// HeartbeatIntervalMs defaults to 100; a member is dead after
	// DetectMultiplier (default 3) intervals without a heartbeat.
	HeartbeatIntervalMs uint32 `json:"heartbeatIntervalMs,omitempty"`
	DetectMultiplier    uint32 `json:"detectMultiplier,omitempty"`
}

// L2Member is one node of the L2 ownership group.
type L2Member struct {
	// Name is the member's node name (AdvertisementConfig.NodeName on that node).
	Name string `json:"name"`
	// Address is where the member's heartbeats are sent and received (ip:port).
	Address string `json:"address"`
}

// Advertisement announces the VIPs within Prefixes one way.
type Advertisement struct {
	// Name identifies the advertisement in status (the CR's name under the controller).
	Name string `json:"name"`
	// Mode is bgp or l2.
	Mode string `json:"mode"`
	// Prefixes are CIDRs (the pools' ranges): a served VIP inside one is announced.
	Prefixes []string `json:"prefixes"`
	// Peers limits a bgp advertisement to these BGPPeer names; empty means all.
	Peers []string `json:"peers,omitempty"`
	// Communities are standard ("65000:100") or large ("65000:1:2") communities.
	Communities []string `json:"communities,omitempty"`
	// LocalPreference is sent to iBGP peers; MED ranks nodes for eBGP peers.
	LocalPreference *uint32 `json:"localPreference,omitempty"`
	MED             *uint32 `json:"med,omitempty"`
	// AggregationLength announces the covering prefix of that length instead
	// of the /32 (v4) or /128 (v6) of each VIP; zero means per VIP.
	AggregationLength   uint8 `json:"aggregationLength,omitempty"`
	AggregationLengthV6 uint8 `json:"aggregationLengthV6,omitempty"`
	// Interfaces limits an l2 advertisement to these interfaces; empty means L2Config.Interfaces.
	Interfaces []string `json:"interfaces,omitempty"`
}

// AdvertisementStatus is GET /v1/advertisement: the configuration in force
// (passwords removed) and the state of each BGP and BFD session.
type AdvertisementStatus struct {
	Config      AdvertisementConfig `json:"config"`
	BGPPeers    []BGPPeerStatus     `json:"bgpPeers,omitempty"`
	BFDSessions []BFDSessionStatus  `json:"bfdSessions,omitempty"`
}

// BGPPeerStatus is one BGP session's state.
type BGPPeerStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	// State is the BGP FSM state: idle, connect, active, opensent, openconfirm, established.
	State string `json:"state"`
	// Since is when the state last changed (RFC 3339).
	Since          string `json:"since,omitempty"`
	PrefixesSent   int    `json:"prefixesSent"`
	BFD            string `json:"bfd,omitempty"` // the BFD session's state, if any
	LastDownReason string `json:"lastDownReason,omitempty"`
}

// BFDSessionStatus is one BFD session's state.
type BFDSessionStatus struct {
	Peer string `json:"peer"`
	// State is AdminDown, Down, Init or Up (RFC 5880 §4.1).
	State              string `json:"state"`
	Since              string `json:"since,omitempty"`
	LocalDiscriminator uint32 `json:"localDiscriminator"`
	// RemoteDiagnostic is the peer's last diagnostic code name.
	RemoteDiagnostic   string `json:"remoteDiagnostic,omitempty"`
	TransmitIntervalMs uint32 `json:"transmitIntervalMs"`
	DetectTimeMs       uint32 `json:"detectTimeMs"`
	// Mode is single-hop (RFC 5881) or multihop (RFC 5883).
	Mode string `json:"mode,omitempty"`
}

// VIPStatus is one entry of GET /v1/vips: a VIP this node serves and how it
// is announced.
type VIPStatus struct {
	VIP string `json:"vip"`
	// Services are the names of the services using the VIP.
	Services []string `json:"services"`
	// Announced lists how the VIP is announced from this node now, as
	// "bgp/<peer>" and "l2/<interface>"; empty when it is not announced.
	Announced []string `json:"announced,omitempty"`
	// Owner is the L2 owner node chosen for the VIP (l2 advertisements only).
	Owner string `json:"owner,omitempty"`
	// Local is true when the VIP is a local address of the node (services the
	// daemon terminates itself: N2, PFCP, Diameter).
	Local bool `json:"local,omitempty"`
	// Reason says why a served VIP is not announced (no advertisement covers
	// it, no ready endpoint with externalTrafficPolicy Local, node draining).
	Reason string `json:"reason,omitempty"`
}
