package member

// Split brain, as pinned by sim_test.go (TestSplitBrain, TestGroupFailover,
// TestThawWithLostHeartbeats) and seen in the scenarios/l2 lab.
//
// Members that cannot hear each other compute ownership over the members
// they do hear, so both sides of a partition claim VIPs:
//
//   - Symmetric partition (heartbeats lost both ways, both sides still on
//     the client's segment): an isolated node claims every VIP, the others
//     share them. Every VIP held by the other side is answered for twice;
//     ARP caches follow whichever gratuitous ARP or reply came last. When
//     the partition heals, ownership converges within one heartbeat and the
//     node that loses a VIP stops answering at once. The scenarios/l2 lab
//     reproduces it (heartbeats dropped on one node, all on the segment):
//     ARP replies and NAs for each VIP come from two MACs, and the client
//     follows whichever answered last; after healing, one MAC again.
//   - One-way loss (b stops hearing a, a still hears b): b claims all, a
//     keeps its share, so a's VIPs are claimed twice for as long as it lasts.
//   - Frozen node (SIGSTOP, a paused VM): the others take its VIPs after the
//     detection time. On thawing, it has not run for longer than a detection
//     time, notices, and warms up again: it claims nothing until it has heard
//     every member (the heartbeats queued in its socket usually do that at
//     once) or a detection time has passed. It then takes its share back.
//   - Restart (kill -9 and start): the new incarnation warms up the same way;
//     the others see the new incarnation not ready and take its VIPs at once
//     instead of waiting for a timeout.
//   - Graceful stop: Leave sends a last heartbeat saying not ready; the
//     others take the VIPs over on receiving it, without waiting for the
//     detection time (about 30 ms of blackout in the lab instead of 300).
//   - Hand-over: a node that becomes eligible claims when it is ready; the
//     previous owner releases on the ready heartbeat, one network latency
//     later. For that latency both answer (two ARP replies with different
//     MACs are possible in that window, not after).
//
// What fencing (issue 15, hitless HA) needs: a way for the side that lost
// the members to know it must not answer, which heartbeats alone cannot
// give. Options: a quorum (claim only while hearing a majority of members,
// which needs three or more nodes and leaves a two-node group dark on a
// partition), a witness reachable from the client side (the gateway's ARP
// entry, an external arbiter or the BGP router), or claim/release
// acknowledged in heartbeats (each heartbeat lists the members the sender
// sees as eligible; a node claims a VIP only once the previous owner's
// heartbeat shows it has seen the new owner), which removes the one-latency
// hand-over overlap but not partitions.
