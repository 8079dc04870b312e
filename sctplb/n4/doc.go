// Package n4 is the PFCP-aware N4 steering proxy's logic (TS 29.244, SMF to
// UPF, UDP 8805) as a pure state machine, the PFCP sibling of sctplb/steer:
// datagrams and ticks go in through Machine.Step, the datagrams to send and
// the counters to bump come out as Actions. It owns no socket, starts no
// goroutine and reads no clock. The UDP shell is sctplb.N4Proxy; the daemon
// wiring cmd/telcolb/app/pfcp.go. The package is named after the reference
// point (N4), as the daemon names the NGAP proxy after N2; the message
// parser it uses is l7parse/pfcp.
//
// What the SMFs see: one UPF, with the proxy's Node ID and one Recovery Time
// Stamp that never changes while the proxy runs. What each UPF sees: one CP
// function, the proxy, with the same Node ID and Recovery Time Stamp.
//
// Node level (terminated per peer, never relayed): the proxy sets up a PFCP
// association with every configured UPF (Association Setup Request, retried
// until answered) and accepts the UPFs' own setup requests; it accepts the
// SMFs' Association Setup, Update and Release; it answers every Heartbeat
// Request and sends its own to every associated peer. A UPF whose
// heartbeats go unanswered N1 times is unreachable: it gets no new sessions
// and the proxy keeps retrying the association. A Recovery Time Stamp that
// changes (in a Heartbeat or Association Setup) means the UPF restarted and
// lost its sessions: once associated again, the proxy replays each session's
// stored Establishment Request and accepted Modification Requests to it,
// with the proxy's SEID unchanged, so the SMFs notice nothing. A UPF
// unreachable for LossTimeout, or releasing its association, is lost: its
// sessions are moved (replayed to another UPF chosen by the policy) or
// released, per Config.OnLoss. An SMF whose Recovery Time Stamp changes has
// restarted: the proxy deletes its sessions on the UPFs. PFD Management
// Requests from SMFs are answered by the proxy and fanned out to every UPF
// (the latest one is replayed to UPFs that associate later).
//
// Session level: a Session Establishment Request picks a UPF (round robin,
// fewest sessions or weighted), among the UPFs of the first steering rule
// its DNN, S-NSSAI or Network Instances match (Config.Steering; no match:
// any UPF; a match whose UPFs are all unavailable: No resources available,
// never a UPF the operator did not list for it). The proxy allocates one SEID per session
// (never 0, unique among its sessions) and puts it, with its own address,
// in the F-SEID both sides see: the UP F-SEID toward the SMF, the CP F-SEID
// toward the UPF. SEIDs the UPFs choose may collide across UPFs; the SMFs
// never see them. Modification and Deletion Requests are routed by that
// SEID, the UPF's Session Report Requests likewise, each with the header
// SEID the receiver expects. The proxy numbers the requests it sends with
// its own sequence numbers (several SMFs may use the same ones) and retries
// them (T1, N1) itself; a request retransmitted by its sender (same sequence
// number from the same address) is never forwarded twice: it is absorbed
// while the answer is pending, then answered from a cache (CacheTTL). IEs
// other than the Node ID and F-SEID are relayed byte for byte.
//
// Bad input (TS 29.244 §7.6): a datagram too short or of an unknown type is
// discarded; another version gets Version Not Supported; a request whose
// length fields do not fit, or lacking or garbling an IE the proxy needs,
// gets the matching cause (Invalid Length, Mandatory IE missing or
// incorrect, with the Offending IE). A session request for an unknown SEID
// gets "Session context not found"; one from an SMF without an association
// gets "No established PFCP Association"; with no UPF available,
// "No resources available". None of these changes state.
//
// Relayed without interpretation: the content of session requests (PDRs,
// FARs, URRs, QERs, BARs: the UPF's business) and of Session Report
// Requests. Answered but not acted upon: Node Report Requests (user plane
// path failure reports concern the UPF's peers, not the SMF's view of one
// UPF) and Association Update Requests. Refused (cause Request rejected):
// Session Set Deletion Requests, which name FQ-CSIDs the proxy does not
// track.
package n4
