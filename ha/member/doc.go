package member

// Split brain, and how it is fenced (issue 15). Pinned by sim_test.go
// (TestSplitBrain, TestGroupFailover, TestThawWithLostHeartbeats) and by
// the scenarios/l2 lab.
//
// Members that cannot hear each other compute ownership over the members
// they do hear, so both sides of a partition claim VIPs. Heartbeats alone
// cannot tell a side it must not answer. The ways to know were: a quorum
// (claim only while hearing a majority, which needs three or more nodes and
// leaves a two-node group dark on a partition), a witness reachable from
// the clients' side, or the clients' segment itself. L2 announcement has the
// last for free: every member answers ARP / NS on the segment the clients
// are on, so when two members claim a VIP, each sees the other's gratuitous
// ARP, ARP replies or Neighbor Advertisements for it. Fencing uses that
// (fence.go; the shell, ha/l2, reports claims and probes):
//
//   - Input: a claim, "identity X bound VIP V", for a VIP this node owns,
//     from an identity not its own. Identities are MACs, the only thing both
//     claimants see of each other on the segment (node names are in the
//     heartbeats that do not arrive).
//   - Tie-breaker: the rendezvous score of (MAC, VIP), as for ownership,
//     ties to the smaller MAC (ClaimWinner). Both claimants compute it from
//     the same two MACs, so they agree without exchanging anything, and a
//     test computes it the same way from the MACs it sees in a capture. A
//     score per VIP, not "the smaller MAC wins", so the VIPs of a partition
//     spread over both sides instead of all going to one node.
//   - The loser is fenced: it stops answering and announcing the VIP but
//     keeps it by the ownership rules (Owner still names it; Owned and
//     Fenced tell the difference). While fenced its shell probes for the
//     VIP every interval (ARP probe, DAD-style NS: they claim nothing and
//     update no cache); the winner's answers are claims that hold the
//     fence. It takes the VIP back when it is the owner by the normal rules
//     and no claim was seen for the hold time (5 intervals, 500 ms): the
//     winner died, or the partition healed and the winner released the VIP
//     on the loser's heartbeat. So the VIP is answered by one node for as
//     long as the partition lasts, with no flapping, and a dead winner
//     leaves it dark for at most the hold time.
//   - The winner announces the VIP again (a gratuitous burst, at most once
//     per hold time), so caches that followed the loser's last announcement
//     come back, and the loser, if it had not noticed yet, sees claims.
//   - Settle time: in a normal hand-over two members claim a VIP for one
//     network latency (the new owner's burst starts before the old owner
//     has its ready heartbeat). A conflict is acted on only when a claim
//     arrives at least one interval after the first one seen while this
//     node owns the VIP; by then the old owner of a hand-over has released,
//     and the new one is never fenced by it. Takeover (the old owner dead or
//     gone) and failback take no longer than before: sim_test.go runs every
//     scenario with claims visible on the segment, with the same bounds.
//
// The cases:
//
//   - Symmetric partition (heartbeats lost both ways, both sides still on
//     the client's segment): an isolated node claims every VIP, the others
//     share them. For each VIP the two claimants see each other's claims
//     and within about a second (detection, the takeover burst, a
//     confirming claim, the winner's burst) only the tie-breaker's choice
//     answers. When the partition heals, ownership converges within one
//     heartbeat: a fenced node that is the normal owner again answers once
//     the other side has stopped answering its probes for the hold time
//     (about 400 ms in the simulation, during which the VIP is answered by
//     nobody: client caches still point at the released node, which
//     carries its traffic only where the VIP is local on every node).
//   - One-way loss (b stops hearing a, a still hears b): b claims all, a
//     keeps its share; a's VIPs are settled by the segment in the same way.
//   - A node cut off from the segment (its link down) hears nothing and
//     sees no claim: it claims every VIP, harmlessly, fences nothing, and
//     re-warms when its link is back (Rewarm), claiming nothing before it
//     has heard the others. The others are not disturbed.
//   - Partitions the segment does not show: two halves of a group on
//     different segments (or VLANs) answering for the same VIP both answer,
//     and nothing on either side reveals it. Fencing covers the L2 case the
//     advertisement issue defines (every member answering on the clients'
//     segment), not that one.
//   - Frozen node (SIGSTOP, a paused VM): the others take its VIPs after the
//     detection time. On thawing, it keeps its view: the time it did not run
//     is not counted against the others (their heartbeats of that time wait
//     unread in its socket, or were lost; either way it could not hear
//     them), so it claims none of their VIPs, and it keeps its own: it
//     sends a heartbeat at once, on which the others hand its VIPs back, and
//     announces them again (a gratuitous burst) so the caches that followed
//     the others come back; a dead member is noticed a detection time of
//     its running later. Until session 14 a thawed node warmed up again
//     instead (not ready, every VIP released), which also fired on a node
//     that was only loaded: a step more than the detection time late made
//     it release its VIPs with a "not ready" heartbeat and claim them back
//     on hearing the others, so on a loaded machine (load 20-30 on 2 cores,
//     the N2 lab) VIPs moved twice per stall between live nodes.
//   - Loaded node (its process waits for a CPU, steps come late): the same
//     rule. A stall of the whole group moves nothing; one member's stall
//     moves its VIPs only if its heartbeats stopped for the others'
//     detection time, and they come back at once (TestStallsDoNotMoveVIPs).
//     The shell logs a step more than an interval late ("member: ran late").
//   - Restart (kill -9 and start): the new incarnation warms up the same way;
//     the others see the new incarnation not ready and take its VIPs at once
//     instead of waiting for a timeout.
//   - Graceful stop: Leave sends a last heartbeat saying not ready; the
//     others take the VIPs over on receiving it, without waiting for the
//     detection time (about 30 ms of blackout in the lab instead of 300).
//   - Hand-over: a node that becomes eligible claims when it is ready; the
//     previous owner releases on the ready heartbeat, one network latency
//     later. For that latency both answer (two ARP replies with different
//     MACs are possible in that window, not after); the settle time keeps
//     it from being taken for a conflict.
