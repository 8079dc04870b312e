package app

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestHAFlagsParseAndNameTheBadFlag(t *testing.T) {
	good := []string{"--ha-node-name=lb1", "--ha-listen-address=10.0.0.1:7946", "--ha-peers=lb2=10.0.0.2:7946,lb3=[fd00::3]:7946",
		"--ha-tls-cert-file=/c.pem", "--ha-tls-key-file=/k.pem", "--ha-tls-ca-file=/ca.pem", "--ha-refresh-interval=1s", "--ha-drain-timeout=2s",
		"--ha-keepalive-interval=500ms", "--ha-peer-timeout=3s", "--ha-n2-takeover-abort=peer-lost"}
	o, err := ParseOptions(good, io.Discard)
	if err != nil {
		t.Fatalf("ParseOptions: %v", err)
	}
	c, err := o.HA.Config()
	if err != nil || c == nil {
		t.Fatalf("Config: %v %v", c, err)
	}
	if c.Node.Self != "lb1" || len(c.Node.Peers) != 2 || c.Node.Peers[1].Name != "lb3" || c.Node.Peers[1].Addr != "[fd00::3]:7946" ||
		c.Refresh != time.Second || c.JoinTimeout != defaultHAJoinTimeout || c.DrainTimeout != 2*time.Second || c.Node.CAFile != "/ca.pem" ||
		c.Node.Machine.KeepaliveInterval != 500*time.Millisecond || c.Node.Machine.PeerTimeout != 3*time.Second || c.TakeoverAbort != TakeoverAbortPeerLost {
		t.Errorf("config %+v", c)
	}
	// From the file too.
	cfg := writeFile(t, "ha.yaml", "ha:\n  nodeName: lb1\n  listenAddress: ':7946'\n  peers: ['lb2=h:1']\n  tlsCertFile: c\n  tlsKeyFile: k\n  tlsCAFile: ca\n"+
		"  peerTimeout: 6s\n  n2TakeoverAbort: 'off'\n")
	if o, err := ParseOptions([]string{"--config", cfg}, io.Discard); err != nil || o.HA.NodeName != "lb1" {
		t.Errorf("file: %+v %v", o.HA, err)
	} else if c, err := o.HA.Config(); err != nil || c.Node.Machine.PeerTimeout != 6*time.Second || c.TakeoverAbort != TakeoverAbortOff ||
		c.Node.Machine.KeepaliveInterval != time.Second {
		t.Errorf("file: config %+v %v", c, err)
	}
	// The defaults: keepalives every second, a peer lost after 4 s of
	// silence, ABORTs only for VIPs owned here.
	def := good[:6]
	if o, err := ParseOptions(def, io.Discard); err != nil {
		t.Error(err)
	} else if c, err := o.HA.Config(); err != nil || c.Node.Machine.KeepaliveInterval != time.Second || c.Node.Machine.PeerTimeout != 4*time.Second || c.TakeoverAbort != TakeoverAbortOwner {
		t.Errorf("defaults: %+v %v", c, err)
	}
	if o, _ := ParseOptions(nil, io.Discard); o.HA.NodeName != "" {
		t.Errorf("HA on by default: %+v", o.HA)
	}
	bad := map[string][]string{
		"ha-listen-address":     {"--ha-listen-address=nope"},
		"ha-peers":              {"--ha-peers=lb2"},
		"ha-tls-ca-file":        {"--ha-tls-ca-file="},
		"ha-refresh-interval":   {"--ha-refresh-interval=1ms"},
		"ha-drain-timeout":      {"--ha-drain-timeout=soon"},
		"ha-peer-timeout":       {"--ha-peer-timeout=400ms"}, // not above the keepalive interval (500ms)
		"ha-keepalive-interval": {"--ha-keepalive-interval=10ms"},
		"ha-n2-takeover-abort":  {"--ha-n2-takeover-abort=Owner"},
	}
	for flag, change := range bad {
		args := append(append([]string(nil), good...), change...)
		if _, err := ParseOptions(args, io.Discard); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%v: error %v does not name %s", change, err, flag)
		}
	}
	if _, err := ParseOptions([]string{"--ha-peers=lb2=h:1"}, io.Discard); err == nil || !strings.Contains(err.Error(), "ha-node-name") {
		t.Errorf("peers without a node name: %v", err)
	}
	if _, err := ParseOptions(append(good, "--ha-peers=lb1=h:1"), io.Discard); err == nil || !strings.Contains(err.Error(), "ha-peers") {
		t.Errorf("self as peer: %v", err)
	}
}
