// Package api holds the telcolb daemon's REST resources (the JSON the daemon
// serves and telcolbctl / telcolb-controller send), their validation, and a Go
// client. It is the only contract between the daemon and its callers: the
// daemon turns these into dataplane rules, nobody else touches the datapath.
package api

import "time"

// Version is the path prefix of every resource: /v1/services, /v1/conntrack, ...
const Version = "v1"

// Protocol names accepted in Service.Protocol.
const (
	ProtocolTCP  = "tcp"
	ProtocolUDP  = "udp"
	ProtocolSCTP = "sctp"
)

// Modes accepted in Service.Mode.
const (
	// ModeDefault rewrites the destination only: the endpoint sees the client.
	ModeDefault = "default"
	// ModeOneArm rewrites the source to the LB's address on the interface
	// toward the endpoint.
	ModeOneArm = "onearm"
	// ModeFullNAT rewrites the source to the VIP.
	ModeFullNAT = "fullnat"
	// ModeDSR leaves L3 alone; the endpoint holds the VIP and answers the
	// client directly.
	ModeDSR = "dsr"
)

// Values of Service.SCTPPathFailover.
const (
	SCTPPathFailoverOn  = "on"
	SCTPPathFailoverOff = "off"
)

// PathFailoverOn tells whether SCTP path failover applies to s: on when
// asked, or by default for an SCTP service with secondary VIPs, and in
// onearm mode, where the endpoint sees one LB address for every path of a
// multi-homed client and so cannot fail over by itself.
func (s *Service) PathFailoverOn() bool {
	if s.Protocol != ProtocolSCTP || s.SCTPPathFailover == SCTPPathFailoverOff {
		return false
	}
	return s.SCTPPathFailover == SCTPPathFailoverOn || len(s.SecondaryVIPs) > 0 || s.Mode == ModeOneArm
}

// Endpoint selection algorithms accepted in Service.Select.
const (
	SelectRoundRobin = "rr"
	SelectHash       = "hash"
	SelectPersist    = "persist"
	SelectLeastConn  = "leastconn"
	SelectMaglev     = "maglev"
)

// Probe types accepted in Probe.Type.
const (
	ProbeNone  = "none"
	ProbeTCP   = "tcp"
	ProbeUDP   = "udp"
	ProbeHTTP  = "http"
	ProbeHTTPS = "https"
	ProbePing  = "ping"
	ProbeSCTP  = "sctp"
)

// Service is one load-balancer rule: traffic to VIP:Port[-PortEnd]/Protocol is
// spread over Endpoints.
type Service struct {
	// Name identifies the service: 1-253 characters of [a-z0-9._-], starting
	// and ending alphanumeric (the controller uses "<ns>.<svc>.<port>-<proto>").
	Name string `json:"name"`
	// VIP is the primary virtual IP, IPv4 or IPv6.
	VIP string `json:"vip"`
	// SecondaryVIPs are extra VIPs for SCTP multi-homing (at most 3).
	SecondaryVIPs []string `json:"secondaryVIPs,omitempty"`
	// Port is the service port; with PortEnd it is the first of a range.
	Port uint16 `json:"port"`
	// PortEnd, when set, makes [Port, PortEnd] a port range; endpoints with
	// port 0 then receive the client's destination port unchanged.
	PortEnd uint16 `json:"portEnd,omitempty"`
	// Protocol is tcp, udp or sctp.
	Protocol string `json:"protocol"`
	// Mode is default, onearm, fullnat or dsr. Empty means default.
	Mode string `json:"mode,omitempty"`
	// Select is rr, hash, persist, leastconn or maglev (consistent hashing:
	// LB nodes with the same endpoints pick the same one for a new flow).
	// Empty means rr.
	Select string `json:"select,omitempty"`
	// IdleTimeoutSeconds expires idle connections (and persist affinity).
	// Zero means the protocol default.
	IdleTimeoutSeconds uint32 `json:"idleTimeoutSeconds,omitempty"`
	// SCTPPathFailover is on or off (SCTP only). When on, the endpoint's
	// packets toward a client address the client has stopped using go on
	// the client's live path instead, so a client's path failure no longer
	// waits for the endpoint's retransmission timers. Empty means on for
	// SCTP services with secondary VIPs or in mode onearm, off otherwise.
	SCTPPathFailover string `json:"sctpPathFailover,omitempty"`
	// SCTPPathHoldDownMillis is how long the client must have used only
	// other paths, with the endpoint's packets toward an address left
	// unanswered, before they are steered. Zero means 1000 (1 s). Once the
	// client has moved its own traffic off the address, 200 ms (or this,
	// if shorter) is enough.
	SCTPPathHoldDownMillis uint32 `json:"sctpPathHoldDownMillis,omitempty"`
	// Endpoints receive the traffic.
	Endpoints []Endpoint `json:"endpoints"`
	// Probe checks endpoint liveness; nil means every endpoint is up.
	Probe *Probe `json:"probe,omitempty"`
	// N2 enables the NGAP-aware N2 proxy for this service (sctplb) instead of
	// per-association L4 balancing. Only valid with protocol sctp.
	N2 bool `json:"n2,omitempty"`
	// PFCP enables the PFCP-aware N4 proxy for this service (sctplb/n4):
	// the SMFs see one UPF on VIP:8805, the endpoints are the UPFs. Only
	// valid with protocol udp and port 8805.
	PFCP bool `json:"pfcp,omitempty"`
	// PFCPSteering confines new PFCP sessions to some of the endpoints by
	// DNN, slice or network instance (first matching rule; sessions no rule
	// matches may use any endpoint). Only with pfcp.
	PFCPSteering []PFCPSteeringRule `json:"pfcpSteering,omitempty"`
	// Diameter makes the daemon a Diameter agent on VIP:port (sctplb/diam,
	// RFC 6733 §2.8) instead of an L4 balancer: the endpoints are the
	// Diameter servers, and every request of a Session-Id goes to one of
	// them. Only valid with protocol tcp or sctp.
	Diameter *DiameterSpec `json:"diameter,omitempty"`
	// AllowLinkLocal accepts link-local VIPs and endpoints (169.254.0.0/16,
	// fe80::/10), refused otherwise: they are valid on one link only.
	AllowLinkLocal bool `json:"allowLinkLocal,omitempty"`
}

// PFCPSteeringRule maps sessions to UPFs. Set match fields must all match;
// at least one is set.
type PFCPSteeringRule struct {
	// DNN matches the APN/DNN, in full or as its network identifier.
	DNN string `json:"dnn,omitempty"`
	// SNSSAI is "SST" (any SD) or "SST-SD" with SD in 6 hex digits.
	SNSSAI string `json:"snssai,omitempty"`
	// NetworkInstance matches a Network Instance of the request's PDIs or
	// forwarding parameters.
	NetworkInstance string `json:"networkInstance,omitempty"`
	// Endpoints are the UPFs the matching sessions use: service endpoint
	// addresses ("10.0.0.2", or "10.0.0.2:8805" where two share an address).
	Endpoints []string `json:"endpoints"`
}

// Endpoint is one backend of a Service.
type Endpoint struct {
	Address string `json:"address"`
	// Port is the endpoint's port; 0 keeps the client's destination port
	// (required to be 0 or equal to Service.Port in dsr mode).
	Port uint16 `json:"port"`
	// Weight biases rr/hash/persist selection; 0 means 1. At most 100.
	Weight uint16 `json:"weight,omitempty"`
}

// Probe describes the endpoint health check the daemon runs from the LB node.
type Probe struct {
	Type string `json:"type"`
	// Port probed; 0 means the endpoint's own port.
	Port uint16 `json:"port,omitempty"`
	// Request is the HTTP path (http/https) or the UDP payload to send.
	Request string `json:"request,omitempty"`
	// Response, when set, must appear in the HTTP body or the UDP reply.
	Response        string `json:"response,omitempty"`
	IntervalSeconds uint32 `json:"intervalSeconds,omitempty"`
	TimeoutSeconds  uint32 `json:"timeoutSeconds,omitempty"`
	// Retries is how many consecutive failures mark an endpoint down (and
	// successes mark it up again).
	Retries uint32 `json:"retries,omitempty"`
}

// ServiceStatus is what GET /v1/services returns: the spec plus live state.
type ServiceStatus struct {
	Service   Service          `json:"service"`
	Endpoints []EndpointStatus `json:"endpointStatus"`
	// Packets and Bytes count traffic in both directions.
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// ActiveConnections is the number of live conntrack entries.
	ActiveConnections uint64 `json:"activeConnections"`
	// SCTPPathSteerings counts the steerings of SCTP path failover begun
	// (see Service.SCTPPathFailover).
	SCTPPathSteerings uint64 `json:"sctpPathSteerings,omitempty"`
	// SlowPathPackets counts the established packets the datapath's fast
	// paths left to its slow one (DSR, SCTP path failover, fragments, a
	// next hop not cached yet, ...): their share of Packets is where the
	// per-packet cost goes.
	SlowPathPackets uint64 `json:"slowPathPackets,omitempty"`
}

// EndpointStatus is one endpoint's health and counters.
type EndpointStatus struct {
	Address string `json:"address"`
	Port    uint16 `json:"port"`
	Weight  uint16 `json:"weight"`
	// Healthy is the probe verdict (true when there is no probe).
	Healthy bool `json:"healthy"`
	// LastProbeError explains the last failed probe.
	LastProbeError    string `json:"lastProbeError,omitempty"`
	Packets           uint64 `json:"packets"`
	Bytes             uint64 `json:"bytes"`
	Sessions          uint64 `json:"sessions"`
	ActiveConnections uint64 `json:"activeConnections"`
	// N2 is, for an N2 service, the state of the proxy's NG associations to
	// this AMF (one per set-up gNB): "up" (all established with NG Setup
	// answered), "partial", "down" (none; Healthy is then false whatever
	// the probe says), or "idle" (no gNB set up yet).
	N2 string `json:"n2,omitempty"`
}

// Conn is one conntrack entry as GET /v1/conntrack returns it.
type Conn struct {
	Protocol string `json:"protocol"`
	Service  string `json:"service"`
	// Client is the original source, VIP the original destination.
	Client string `json:"client"`
	VIP    string `json:"vip"`
	// Endpoint is where the LB sent it; Source is the source the endpoint
	// sees (client, LB interface address or VIP, by mode).
	Endpoint string `json:"endpoint"`
	Source   string `json:"source"`
	State    string `json:"state"`
	// Packets/Bytes: Orig from the client, Reply from the endpoint.
	OrigPackets  uint64 `json:"origPackets"`
	OrigBytes    uint64 `json:"origBytes"`
	ReplyPackets uint64 `json:"replyPackets"`
	ReplyBytes   uint64 `json:"replyBytes"`
	// IdleSeconds since the last packet; ExpiresInSeconds until removal.
	IdleSeconds      uint32 `json:"idleSeconds"`
	ExpiresInSeconds uint32 `json:"expiresInSeconds"`
	// SCTP verification tags (client's and endpoint's), hex.
	VTagClient   string `json:"vtagClient,omitempty"`
	VTagEndpoint string `json:"vtagEndpoint,omitempty"`
	// Paths are the other paths of a multi-homed SCTP association (this
	// Conn is its primary path), each with its own counters.
	Paths []ConnPath `json:"paths,omitempty"`
	// Steering is the LB-assisted path failover of an SCTP association,
	// absent when the LB never steered it.
	Steering *ConnSteering `json:"steering,omitempty"`
}

// ConnSteering says where the LB sends the endpoint's packets of an SCTP
// association instead of the client address they are addressed to.
type ConnSteering struct {
	// Count is how many steerings began over the association's life.
	Count uint32 `json:"count"`
	// Active: the endpoint's packets toward From go to To now, with VIP
	// as their source, for SinceSeconds. Otherwise the last steering.
	Active       bool    `json:"active"`
	From         string  `json:"from"`
	To           string  `json:"to"`
	VIP          string  `json:"vip"`
	SinceSeconds float64 `json:"sinceSeconds,omitempty"`
}

// ConnPath is one (client address, VIP) pair of a multi-homed SCTP
// association and the endpoint address it reaches. Ports are the Conn's.
type ConnPath struct {
	Client       string `json:"client"`
	VIP          string `json:"vip"`
	Endpoint     string `json:"endpoint"`
	Source       string `json:"source"`
	OrigPackets  uint64 `json:"origPackets"`
	OrigBytes    uint64 `json:"origBytes"`
	ReplyPackets uint64 `json:"replyPackets"`
	ReplyBytes   uint64 `json:"replyBytes"`
}

// Health is GET /v1/health.
type Health struct {
	Status     string   `json:"status"`
	Interfaces []string `json:"interfaces"`
	Services   int      `json:"services"`
	// MaxServices is how many services the datapath holds (one ID each);
	// creating one more is refused with 507.
	MaxServices int `json:"maxServices,omitempty"`
	// ConntrackNotMigrated counts conntrack entries (connection
	// directions) the daemon could not carry over when a restart changed
	// the conntrack layout or size; they were dropped.
	ConntrackNotMigrated uint64 `json:"conntrackNotMigrated,omitempty"`
	// AttachMode is "tcx" or "clsact": the TC hook, attached on every
	// interface in every --attach mode.
	AttachMode string `json:"attachMode"`
	// XDPInterfaces lists the interfaces where xdp_ingress runs in front
	// of TC (--attach xdp, xdp-generic, or auto on a native-XDP driver).
	XDPInterfaces []string `json:"xdpInterfaces,omitempty"`
	// BootID is random per daemon start: a change tells a client that the
	// daemon restarted and its rules should be re-applied.
	BootID string `json:"bootID"`
	// NotReady says why Status is "syncing": the node waits for its HA
	// peers' bulk resync and announces no VIP until it completes.
	NotReady string `json:"notReady,omitempty"`
}

// Error is the body of every 4xx/5xx answer.
type Error struct {
	// Field names the offending JSON field path, e.g. "endpoints[2].address".
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// DiameterSpec configures a service's Diameter agent.
type DiameterSpec struct {
	// OriginHost and OriginRealm are the agent's Diameter identity (FQDNs).
	OriginHost  string `json:"originHost"`
	OriginRealm string `json:"originRealm"`
	// Mode is relay (default: every application, advertised as the relay
	// application 0xffffffff) or proxy (only Applications).
	Mode string `json:"mode,omitempty"`
	// Applications are the application IDs a proxy serves (e.g. 4 for
	// Credit-Control, 16777238 for Gx); a relay ignores them.
	Applications []uint32 `json:"applications,omitempty"`
}

// Diameter agent modes.
const (
	DiameterRelay = "relay"
	DiameterProxy = "proxy"
)

// HAStatus is GET /v1/ha: the node's conntrack sync with its HA group.
type HAStatus struct {
	// Enabled is false when the daemon runs without --ha-node-name.
	Enabled bool   `json:"enabled"`
	Node    string `json:"node,omitempty"`
	// Ready: every reachable peer's bulk resync to this node completed;
	// until then NotReady says why and no VIP is announced.
	Ready    bool           `json:"ready"`
	NotReady string         `json:"notReady,omitempty"`
	Peers    []HAPeerStatus `json:"peers,omitempty"`
	// Entries is how many records (conntrack entries and associations)
	// this node holds from its peers.
	Entries int `json:"entries"`
	// N2Records is how many records of N2 proxy state (NG Setup results,
	// UE contexts) this node holds from its peers, every service.
	N2Records       int    `json:"n2Records"`
	RecordsSent     uint64 `json:"recordsSent"`
	RecordsReceived uint64 `json:"recordsReceived"`
	RecordsResent   uint64 `json:"recordsResent"`
	// LagP99Seconds is the upper bound of the lag histogram bucket holding
	// the 99th percentile (change to acknowledgement), 0 before any.
	LagP99Seconds float64 `json:"lagP99Seconds"`
	// Drain is the planned drain's wait for the peers (AdvertisementConfig
	// Draining), absent while the node is not draining.
	Drain *HADrainStatus `json:"drain,omitempty"`
}

// HADrainStatus: a planned drain withdraws the VIPs only once every peer
// up at the drain has acknowledged every change queued until then, or
// after --ha-drain-timeout.
type HADrainStatus struct {
	// State is "waiting" (the VIPs are still announced), "acknowledged"
	// (every peer acknowledged; withdrawn), "timeout" (withdrawn without
	// the acknowledgement of Peers) or "noPeer" (withdrawn with no peer
	// up: no node holds this node's flows, and none may announce its
	// VIPs).
	State string `json:"state"`
	// Peers: while waiting, the peers whose acknowledgement is awaited;
	// after a timeout, those that never gave it.
	Peers []string `json:"peers,omitempty"`
	// Since is when the drain began; WaitSeconds how long it waited (so
	// far, while waiting).
	Since       time.Time `json:"since"`
	WaitSeconds float64   `json:"waitSeconds"`
}

// HADrain states.
const (
	HADrainWaiting      = "waiting"
	HADrainAcknowledged = "acknowledged"
	HADrainTimeout      = "timeout"
	HADrainNoPeer       = "noPeer"
)

// HAPeerStatus is one other member of the HA group.
type HAPeerStatus struct {
	Name   string `json:"name"`
	Up     bool   `json:"up"`
	Synced bool   `json:"synced"`
	// RetransmitTimeoutSeconds is the sync's retransmission timeout
	// towards the peer now; AckDelaySeconds the smoothed delay of its
	// acknowledgements it follows (0 until measured).
	RetransmitTimeoutSeconds float64 `json:"retransmitTimeoutSeconds"`
	AckDelaySeconds          float64 `json:"ackDelaySeconds"`
}
