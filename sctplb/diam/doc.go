// Package diam is the Diameter agent's logic (RFC 6733 relay or proxy
// agent, RFC 3539 watchdog) as a pure state machine, the Diameter sibling
// of sctplb/steer (N2) and sctplb/n4 (PFCP): connection events, messages
// and ticks go in through Machine.Step; the messages to send, connections
// to dial or close and the counters to bump come out as Actions. It owns no
// socket, starts no goroutine and reads no clock. The TCP/SCTP shell is
// sctplb.DiameterAgent; the daemon wiring cmd/telcolb/app/diameter.go. The
// message codec is l7parse/diameter: no dictionary, every AVP the agent
// does not route on is forwarded byte for byte.
//
// Peers. Clients connect to the agent; the agent dials every configured
// server. Capabilities exchange (§5.3): the agent sends its CER to each
// server and learns the server's Origin-Host, Origin-Realm and
// applications from the CEA; it answers each client's CER. A relay
// advertises the relay application (0xffffffff); a proxy its configured
// applications, in the form the servers advertised them (Auth-, Acct- or
// Vendor-Specific-Application-Id), and answers a client sharing none with
// 5010. A second connection from a client identity already connected loses
// the election (CEA 4003) while the first is open, and replaces it
// otherwise (§5.6.4 compares the two ends' identities; here both ends of
// both connections are the same pair, so liveness decides). Every
// connection runs the RFC 3539 watchdog: DWR after Tw of silence, SUSPECT
// when it goes unanswered for another Tw (a server's pending requests fail
// over), DOWN (closed) after a third; a server back from DOWN is REOPEN
// until three DWRs are answered, and gets no requests meanwhile. A server
// is redialled every Tc (longer after a DPR with cause BUSY or
// DO_NOT_WANT_TO_TALK_TO_YOU). DPR is answered with DPA and the
// connection closed; Shutdown sends every peer a DPR (REBOOTING).
//
// Routing (§6.1). A request from a client is refused, with the agent's own
// answer and no state change, when its Route-Record holds the agent's
// identity (3005), when a proxy does not serve its application (3007),
// when it lacks a Destination-Realm (5005), when it names the agent as
// Destination-Host (3001: the agent serves no application), or when it is
// malformed (the codec's 3008, 3009, 5014, 5015, ...). Otherwise:
// Destination-Host naming a server picks that server (3002 if it is not
// OKAY); else Destination-Realm picks the servers of that realm (the
// agent's own realm means every server; a realm no server has is 3003);
// among those serving the application, a Session-Id already bound goes to
// its server while that server is OKAY, and a new one is bound by the
// policy (round robin, fewest sessions, weights). The binding ends with the
// answer to the session-termination request (STR, or CCR with
// CC-Request-Type TERMINATION_REQUEST for Gy/Ro) or after SessionIdle. No
// eligible server: 3002.
//
// Relaying (§6.1.8, §6.2, §5.5.4). The request keeps every byte except
// its hop-by-hop identifier, which the agent replaces with its own (the
// pending table maps it back), and a Route-Record naming the client is
// appended. End-to-end identifiers are untouched. An answer with 3004
// (TOO_BUSY) sends the request to another eligible server (up to MaxTries
// servers). When a server's connection fails (closed, or watchdog
// SUSPECT), its pending requests go to another server with the T flag, or
// are answered 3002. A client's copy of a pending request (T flag, same
// Origin-Host and end-to-end identifier) is not forwarded again; the one
// answer goes to the latest copy. A request unanswered for RequestTimeout
// gets 3002; an answer arriving after that, or after a failover, is
// dropped, so no client ever gets two answers to one request.
// Server-initiated requests (RAR, ASR) go to the client their
// Destination-Host names, with the same pending table.
//
// Service changes (Reconfigure). Servers added, removed or reweighted and
// the policy change in place: clients and kept servers stay connected and
// keep their bindings; a removed server gets a DPR, its pending requests
// fail over as above and its sessions are bound anew at their next
// request.
//
// Not implemented, by choice: redirect agents' 3006 handling (a relay
// forwards the answer; the client follows it), Proxy-Info handling (it is
// forwarded untouched, as RFC 6733 §6.7.3 allows a relay), TLS/DTLS
// (the daemon terminates plain TCP or SCTP), and realm routing tables
// beyond "the servers' realms and our own".
package diam
