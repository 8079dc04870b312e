#!/usr/bin/env bash
# Removes lab namespaces and bpffs pins (tlb<pid>-...) left by test processes
# that no longer exist, e.g. after a test binary was killed by a timeout. Live runs are kept.
set -u
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^tlb[0-9]+' || true); do
  pid=$(sed -E 's/^tlb([0-9]+).*/\1/' <<<"$ns")
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    ip netns del "$ns" 2>/dev/null && echo "sweep: removed stale namespace $ns"
  fi
done
# bpffs pins of dead test runs (/sys/fs/bpf/tlb<pid>-...): the datapath they
# held is gone with the namespaces, the pinned maps are not.
for pin in /sys/fs/bpf/tlb[0-9]*; do
  [ -e "$pin" ] || continue
  pid=$(basename "$pin" | sed -E 's/^tlb([0-9]+).*/\1/')
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    rm -rf "$pin" && echo "sweep: removed stale pins $pin"
  fi
done
exit 0
