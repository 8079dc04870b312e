// Package sctplb is the NGAP-aware N2 proxy: gNBs connect to one SCTP
// endpoint (port 38412, PPID 60) and every UE's signalling is steered to the
// AMF holding its context. The decisions live in sctplb/steer, a pure state
// machine; this package is the I/O shell that feeds it association events
// and messages from a transport.Transport (kernel SCTP in production,
// usrsctp where the kernel has none, memory in tests) and carries out the
// sends, dials and closes it returns, and exports the metrics.
//
// Behaviour (TS 38.413 / 38.412), and the choices made where the spec leaves
// a proxy room:
//
//   - NG Setup: the proxy opens one association per (gNB, AMF) pair and
//     replays the gNB's own NG Setup Request on each, so every AMF sees an
//     ordinary gNB. The gNB gets one NG Setup Response: union of the served
//     GUAMIs, PLMN support merged per PLMN (union of slices), relative
//     capacities summed and capped at 255, AMF Name = Config.Name. It is sent
//     when all AMFs answered, or SetupWait after the first answer; with no
//     AMF it is NG Setup Failure with Time To Wait 10s. AMFs that come up
//     later (or come back) get the cached request (and the latest RAN
//     Configuration Update); the gNB then gets an AMF Configuration Update
//     with the wider GUAMI list.
//   - Checks before state (TS 38.413 section 10, steer/validate.go): every
//     decodable PDU must be a message its procedure defines, come from the
//     side that sends it and carry the IEs the proxy needs
//     (l7parse/ngap.Required); otherwise the sender gets the spec's reaction
//     (Error Indication with an abstract-syntax or receiver-state cause, NG
//     Setup Failure for an NG Setup Request), telcolb_n2_rejected_total
//     counts it by reason, and nothing changes. Error Indications and WARN
//     lines caused by one peer are rate limited per peer
//     (telcolb_n2_suppressed_total).
//   - Initial UE Message: a 5G-S-TMSI whose AMF Set ID and Pointer match a
//     served, available GUAMI of a live AMF goes there; without the IE, the
//     5G-GUTI of a plain (or integrity-protected, never ciphered)
//     Registration Request, or the 5G-S-TMSI of a Service Request, read from
//     the NAS-PDU (TS 24.501 9.11.3.4), does the same; otherwise the policy
//     (round robin, least UEs, weighted) picks among live AMFs, preferring
//     the UE's AMF set (5G-S-TMSI, NAS identity or AMF Set ID IE).
//   - Reroute NAS Request: the proxy sends the UE's Initial UE Message (with
//     the AMF Set ID and Allowed NSSAI added) to a live AMF of the target set
//     and moves the UE there; with no such AMF it relays the request to the
//     gNB (steer/reroute.go).
//   - UE records: (gNB assoc, RAN-UE-NGAP-ID) <-> (AMF, AMF-UE-NGAP-ID), the
//     latter learned from the AMF's first downlink. AMF-UE-NGAP-IDs are not
//     rewritten; they are unique per AMF, and collisions across AMFs are
//     harmless because gNBs key UE contexts by their own RAN-UE-NGAP-ID.
//     Handover Request (target side, AMF ID only) and Path Switch Request
//     (Source-AMF-UE-NGAP-ID) are resolved per AMF; an ID held by two AMFs
//     is refused with Error Indication rather than guessed. UE Context
//     Release Complete removes a record.
//   - Downlink non-UE messages (Paging, PWS, configuration transfer, NRPPa)
//     go to the gNB whose association they came on: the AMF already chose
//     the gNBs to page by TAI. Answers to Write-Replace Warning and PWS
//     Cancel return to the AMF that asked.
//   - Procedures the proxy terminates toward the gNB (answered by the proxy,
//     fanned out to the AMFs, their answers absorbed): RAN Configuration
//     Update, NG Reset. A gNB's full NG Reset goes to every AMF; a partial
//     one is split by owner. An AMF's full NG Reset becomes a partial reset
//     toward the gNB listing only that AMF's UEs. AMF Configuration Update is
//     acknowledged by the proxy and merged into the gNB's view. AMF Status
//     Indication is relayed and makes the listed GUAMIs ineligible for
//     5G-S-TMSI steering. Overload Start/Stop stay with the proxy: an AMF
//     under Overload Start gets (100 - Traffic Load Reduction)% of the new
//     UEs the policy would give it (none without a reduction); its existing
//     UEs stay; the gNB is not throttled for all.
//   - A repeated NG Setup from a set-up gNB is answered from the merged view
//     and resets its UE contexts (8.7.1.2): AMFs that held some get an NG
//     Reset; a changed request reaches the AMFs at most once per RedialMin.
//     Non-UE Error Indications are logged, not relayed.
//   - AMF loss: UEs that AMF never answered are re-steered (the cached
//     Initial UE Message is replayed to another AMF of the set). Established
//     UEs are released toward their gNB with UE Context Release Command,
//     cause transport-resource-unavailable (the gNB sees its AMF release
//     them; the proxy absorbs the Release Complete), and the lost GUAMIs are
//     announced with AMF Status Indication. The UEs return with a 5G-S-TMSI
//     naming the lost AMF and land in its set. Other UEs are untouched. The
//     association is redialled with exponential backoff.
//   - gNB loss: each of its UEs gets a UE Context Release Request (cause
//     radio-connection-with-ue-lost) toward its AMF; the proxy answers the
//     AMFs' Release Commands itself and closes the upstream associations when
//     they are empty or after DrainTimeout.
//   - Streams: non-UE-associated signalling on stream 0, UE-associated on
//     1..n-1, stable per UE (derived from the RAN-UE-NGAP-ID).
//   - Hosting: Run listens and serves; Serve takes a listener the caller
//     opened (the daemon listens itself so a VIP that is not local fails
//     the API call). Stats is a snapshot (UE contexts per AMF, associations
//     up, per AMF the associations ready of those wanted) refreshed every
//     TickInterval for other goroutines; the daemon shows the latter as an
//     N2 endpoint's state and health. AddAMF and
//     RemoveAMF change the AMFs of a running proxy (steer.AddAMF /
//     steer.RemoveAMF): an added AMF is set up toward every gNB and the
//     gNBs get an AMF Configuration Update; a removed one is handled like a
//     permanent AMF loss, never redialled. The daemon
//     (cmd/telcolb/app/n2.go) applies endpoint changes this way and
//     restarts the Proxy only when the VIPs, port, policy or a weight
//     change.
//   - Malformed PDUs are counted and answered with Error Indication (cause
//     transfer-syntax-error). The steering key comes from a fast APER path
//     (l7parse/ngap Decoder.Key); the presence of every IE is recorded, the
//     values of IEs the key does not use are not validated by the proxy
//     (the AMF or gNB receiving them is the node TS 38.413 10 addresses).
package sctplb
