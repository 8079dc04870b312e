package ha

import (
	"slices"
	"testing"
)

// The diagnostic reads the counters where the kernel keeps them: the Ip
// discards of /proc/net/snmp by header name, the rx and tx drop columns of
// /proc/net/dev, the last column of /proc/net/raw per socket; what grew is
// listed, a socket new since the first snapshot counted from 0.
func TestDropCountersParseAndDiff(t *testing.T) {
	before := dropSnapshot{}
	for k, v := range parseDropCounters(`## snmp
Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards
Ip: 1 64 100 0 0 0 0 3 97 90 7
Icmp: InMsgs
Icmp: 0
## dev
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
  eth0:    1000      10    0    2    0     0          0         0     2000      20    0    5    0     0       0          0
## raw
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  12: 00000000:0084 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0
## raw6
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
`) {
		before["lb2 "+k] = v
	}
	want := map[string]uint64{"lb2 Ip:InDiscards": 3, "lb2 Ip:OutDiscards": 7, "lb2 dev eth0 rx_drop": 2, "lb2 dev eth0 tx_drop": 5,
		"lb2 raw proto 0084 inode 4242 drops": 0}
	for k, v := range want {
		if before[k] != v {
			t.Errorf("%s = %d, want %d (parsed %v)", k, before[k], v, before)
		}
	}
	after := dropSnapshot{}
	for k, v := range before {
		after[k] = v
	}
	after["lb2 raw proto 0084 inode 4242 drops"] = 348
	after["lb2 Ip:OutDiscards"] = 9
	after["gnb1 raw proto 0084 inode 7 drops"] = 1
	got := dropsGrown(before, after)
	if w := []string{"gnb1 raw proto 0084 inode 7 drops +1", "lb2 Ip:OutDiscards +2", "lb2 raw proto 0084 inode 4242 drops +348"}; !slices.Equal(got, w) {
		t.Errorf("grown %v, want %v", got, w)
	}
}
