package app

import (
	"io"
	"strings"
	"testing"
)

// TestHAMembersOneListForTheGroup: every member gets the same --ha-members
// list (a ConfigMap in Kubernetes) and finds its peers and listen address
// in it by its own --ha-node-name (the downward API's node name).
func TestHAMembersOneListForTheGroup(t *testing.T) {
	tlsArgs := []string{"--ha-tls-cert-file=/c.pem", "--ha-tls-key-file=/k.pem", "--ha-tls-ca-file=/ca.pem"}
	members := "--ha-members=node-a=10.0.0.1:7946,node-b=10.0.0.2:7946,node-c=[fd00::3]:7946"
	for self, want := range map[string]struct{ listen, peers string }{
		"node-a": {"10.0.0.1:7946", "node-b=10.0.0.2:7946 node-c=[fd00::3]:7946"},
		"node-c": {"[fd00::3]:7946", "node-a=10.0.0.1:7946 node-b=10.0.0.2:7946"},
	} {
		o, err := ParseOptions(append([]string{"--ha-node-name=" + self, members}, tlsArgs...), io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", self, err)
		}
		c, err := o.HA.Config()
		if err != nil {
			t.Fatalf("%s: %v", self, err)
		}
		var got []string
		for _, p := range c.Node.Peers {
			got = append(got, p.Name+"="+p.Addr)
		}
		if c.Node.Self != self || c.Node.Listen != want.listen || strings.Join(got, " ") != want.peers {
			t.Errorf("%s: listen %s peers %q, want %s %q", self, c.Node.Listen, got, want.listen, want.peers)
		}
	}
	// An explicit listen address wins over the member entry.
	o, err := ParseOptions(append([]string{"--ha-node-name=node-a", members, "--ha-listen-address=0.0.0.0:7946"}, tlsArgs...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := o.HA.Config(); c.Node.Listen != "0.0.0.0:7946" {
		t.Errorf("listen %s, want the flag's", c.Node.Listen)
	}
	// From the file too.
	cfg := writeFile(t, "ha.yaml", "ha:\n  nodeName: b\n  members: ['a=h:1', 'b=h:2']\n  tlsCertFile: c\n  tlsKeyFile: k\n  tlsCAFile: ca\n")
	if o, err := ParseOptions([]string{"--config", cfg}, io.Discard); err != nil {
		t.Errorf("file: %v", err)
	} else if c, _ := o.HA.Config(); len(c.Node.Peers) != 1 || c.Node.Peers[0].Name != "a" || c.Node.Listen != "h:2" {
		t.Errorf("file: %+v", c)
	}
	for name, tt := range map[string]struct {
		args []string
		want string
	}{
		"node not listed":    {[]string{"--ha-node-name=node-z", members}, `does not list ha-node-name "node-z"`},
		"with peers":         {[]string{"--ha-node-name=node-a", members, "--ha-peers=x=h:1"}, "exclude each other"},
		"self twice":         {[]string{"--ha-node-name=a", "--ha-members=a=h:1,a=h:2,b=h:3"}, "listed twice"},
		"bad entry":          {[]string{"--ha-node-name=a", "--ha-members=a=h:1,b"}, "ha-members"},
		"no node name":       {[]string{members}, "ha-node-name is empty"},
		"alone":              {[]string{"--ha-node-name=a", "--ha-members=a=h:1"}, "at least one peer"},
		"bad peer address":   {[]string{"--ha-node-name=a", "--ha-members=a=h:1,b=nope"}, `ha-members "b=nope"`},
		"member named twice": {[]string{"--ha-node-name=a", "--ha-members=a=h:1,b=h:2,b=h:3"}, "given twice"},
	} {
		_, err := ParseOptions(append(tt.args, tlsArgs...), io.Discard)
		if tt.want == "ha-node-name is empty" {
			_, err = ParseOptions(tt.args, io.Discard)
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want error containing %q", name, err, tt.want)
		}
	}
}
