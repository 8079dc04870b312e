#!/bin/sh
# Where an established packet's time goes, line by line of bpf/: runs one
# flow through tc_ingress (or tc_floor) in a loop of BPF_PROG_TEST_RUN
# (dataplane TestJitProfileLoop), samples the machine with perf, and charges
# each sample inside the program to the source line the verifier's line
# info gives for its JIT address. Root; needs perf and python3.
#
#   hack/jitprof.sh [item] [program]     item: tcp_v4 (default), udp_v6, sctp_v4, ...
#                                        program: tc_ingress (default), tc_floor
#
# Samples land on the instruction after a stall, and the first
# instructions of a function also take the cost of entering it (the
# indirect call of the test run, return thunks on hosts with retbleed/SRSO
# mitigations): read the top lines as regions, not as exact instructions.
set -eu
item=${1:-tcp_v4}
prog=${2:-tc_ingress}
secs=10
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$(dirname "$0")/.."
go test -c -o "$dir/dataplane.test" ./dataplane/
TELCOLB_JITPROF="$dir" TELCOLB_JITPROF_ITEM="$item" TELCOLB_JITPROF_PROG="$prog" \
	TELCOLB_JITPROF_SECONDS=$secs "$dir/dataplane.test" -test.run '^TestJitProfileLoop$' >"$dir/test.log" 2>&1 &
loop=$!
# Let the flow be set up, then sample most of the loop.
sleep 3
perf record -q -a -o "$dir/perf.data" -- sleep $((secs - 4)) >/dev/null 2>&1
wait $loop || { cat "$dir/test.log"; exit 1; }
perf report -i "$dir/perf.data" --no-children -g none --sort sym 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
perf script -i "$dir/perf.data" -F ip,sym 2>/dev/null | awk '$2 ~ /^bpf_prog_/ {print $1}' >"$dir/samples.txt"
python3 - "$dir/lines.txt" "$dir/samples.txt" <<'EOF'
import bisect, collections, sys
funcs, lines = [], []
for l in open(sys.argv[1]):
    if l.startswith('FUNC '):
        _, a, n = l.split()
        funcs.append((int(a, 16), int(n)))
    else:
        a, rest = l.rstrip('\n').split(' ', 1)
        lines.append((int(a, 16), rest))
lines.sort()
addrs = [a for a, _ in lines]
count, inside, outside = collections.Counter(), 0, 0
for l in open(sys.argv[2]):
    ip = int(l, 16)
    if not any(a <= ip < a + n for a, n in funcs):
        outside += 1
        continue
    i = bisect.bisect_right(addrs, ip) - 1
    count[lines[i][1][:140]] += 1
    inside += 1
print(f'\nsamples in the program: {inside} (other BPF programs: {outside}); by source line:')
for line, n in count.most_common(40):
    print(f'{100.0 * n / max(inside, 1):5.1f}%  {line}')
EOF
