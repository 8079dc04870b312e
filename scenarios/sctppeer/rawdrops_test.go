package sctppeer

import "testing"

// The drops column is summed over SCTP raw sockets only (local "port"
// 0084, the protocol), IPv4 and IPv6 layouts alike; a text without the
// header is an error, not zero drops.
func TestParseRawDrops(t *testing.T) {
	const v4 = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 106: 00000000:0084 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 194872 2 00000000616ca0f1 1200
 106: 00000000:0084 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 194847 2 00000000bf61b843 34
   1: 00000000:0001 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 194848 2 00000000bf61b844 7
`
	const v6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 106: 00000000000000000000000000000000:0084 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 5
`
	for _, c := range []struct {
		name, text string
		want       uint64
	}{{"v4", v4, 1234}, {"v6", v6, 5}, {"empty table", "  sl  local_address rem_address st drops\n", 0}} {
		got, err := ParseRawDrops(c.text)
		if err != nil || got != c.want {
			t.Errorf("%s: %d, %v; want %d", c.name, got, err, c.want)
		}
	}
	if _, err := ParseRawDrops("no such file\n"); err == nil {
		t.Error("text without the header: no error")
	}
}
