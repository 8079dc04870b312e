package app

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/sctplb/n4"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseOptionsMergesFileAndFlags(t *testing.T) {
	cfg := writeFile(t, "telcolb.yaml", "apiAddress: 0.0.0.0:9000\napiAllowInsecureHTTP: true\ninterfaces: [eth0, eth1]\nmaxConns: 1000\nlogLevel: debug\nstateDir: /srv/lb\n")
	tests := []struct {
		name string
		args []string
		want func(*Options)
	}{
		{"defaults", nil, func(*Options) {}},
		{"flags", []string{"--api-address=[::1]:8091", "--interfaces=eth2,eth3", "--max-conns", "7", "--log-format=text", "--n2-transport=userspace"}, func(o *Options) {
			o.APIAddress, o.Interfaces, o.MaxConns, o.LogFormat, o.N2Transport = "[::1]:8091", []string{"eth2", "eth3"}, 7, "text", "userspace"
		}},
		{"file", []string{"--config", cfg}, func(o *Options) {
			o.APIAddress, o.APIAllowInsecureHTTP, o.Interfaces, o.MaxConns, o.LogLevel, o.StateDir = "0.0.0.0:9000", true, []string{"eth0", "eth1"}, 1000, "debug", "/srv/lb"
		}},
		{"flags override file", []string{"--interfaces=eth9", "--config=" + cfg, "--log-level=warn"}, func(o *Options) {
			o.APIAddress, o.APIAllowInsecureHTTP, o.Interfaces, o.MaxConns, o.LogLevel, o.StateDir = "0.0.0.0:9000", true, []string{"eth9"}, 1000, "warn", "/srv/lb"
		}},
		{"ipv6 conntrack size", []string{"--max-conns-ipv6=1024"}, func(o *Options) { o.MaxConnsIPv6 = 1024 }},
		{"profiling", []string{"--profiling-address=127.0.0.1:6060"}, func(o *Options) { o.ProfilingAddress = "127.0.0.1:6060" }},
		{"profiling from file", []string{"--config=" + writeFile(t, "p.yaml", "profilingAddress: '[::1]:6060'\n")}, func(o *Options) { o.ProfilingAddress = "[::1]:6060" }},
		{"cleanup flag", []string{"--cleanup"}, func(o *Options) { o.Cleanup = true }},
		{"socket lb off", []string{"--socket-lb=false", "--socket-lb-cgroup=/sys/fs/cgroup/lb"}, func(o *Options) {
			o.SocketLB, o.SocketLBCgroup = false, "/sys/fs/cgroup/lb"
		}},
		{"socket lb from file", []string{"--config=" + writeFile(t, "s.yaml", "socketLB: false\nsocketLBCgroup: /x\n")}, func(o *Options) {
			o.SocketLB, o.SocketLBCgroup = false, "/x"
		}},
		{"cleanup subcommand", []string{"--bpf-pin-path=/sys/fs/bpf/x", "cleanup"}, func(o *Options) { o.Cleanup, o.BPFPinPath = true, "/sys/fs/bpf/x" }},
		{"node-setup subcommand", []string{"node-setup", "--interfaces=eth1"}, func(o *Options) { o.NodeSetup, o.Interfaces = true, []string{"eth1"} }},
		{"node-setup flag", []string{"--node-setup"}, func(o *Options) { o.NodeSetup = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOptions(tt.args, io.Discard)
			if err != nil {
				t.Fatalf("ParseOptions: %v", err)
			}
			want := DefaultOptions()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseOptionsRejectsBadSettings(t *testing.T) {
	unknownKey := writeFile(t, "bad.yaml", "apiAddres: 1.2.3.4:1\n")
	badType := writeFile(t, "type.yaml", "maxConns: lots\n")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--nope"}, "unknown flag"},
		{"unknown config key", []string{"--config", unknownKey}, "apiAddres"},
		{"bad config type", []string{"--config", badType}, "maxConns"},
		{"missing config", []string{"--config", "/nonexistent/x.yaml"}, "read config"},
		{"bad address", []string{"--api-address=8091"}, "api-address"},
		{"bad level", []string{"--log-level=loud"}, "log-level"},
		{"bad format", []string{"--log-format=xml"}, "log-format"},
		{"bad n2 transport", []string{"--n2-transport=sctp-over-carrier-pigeon"}, "n2-transport"},
		{"bad pfcp upf loss", []string{"--pfcp-upf-loss=shrug"}, "pfcp-upf-loss"},
		{"bad pfcp heartbeat", []string{"--pfcp-heartbeat-interval=1ms"}, "pfcp-heartbeat-interval"},
		{"zero conns", []string{"--max-conns=0"}, "max-conns"},
		{"profiling off loopback", []string{"--profiling-address=0.0.0.0:6060"}, `profiling-address "0.0.0.0:6060": the profiles are served without authentication`},
		{"profiling without port", []string{"--profiling-address=127.0.0.1"}, "profiling-address"},
		{"stray argument", []string{"serve"}, "unexpected arguments"},
		{"empty interface", []string{"--interfaces=eth0,,eth1"}, "empty interface"},
		{"node-setup and cleanup", []string{"--cleanup", "node-setup"}, "choose one"},
		{"bad attach mode", []string{"--attach=xpd"}, `attach: unknown attach mode "xpd"`},
		{"bad attach mode of an interface", []string{"--interfaces=eth0", "--attach=eth0=fast"}, `attach: unknown attach mode "fast"`},
		{"attach of an interface not attached", []string{"--interfaces=eth0", "--attach=eth1=xdp"}, "attach: interface eth1 is not in interfaces"},
		{"two attach defaults", []string{"--attach=xdp,tc"}, "attach:"},
		{"attach interface twice", []string{"--interfaces=eth0", "--attach=eth0=xdp,eth0=tc"}, "attach:"},
		{"node-setup keeping redirects", []string{"--node-setup", "--icmp-send-redirects"}, "icmpSendRedirects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseOptions(tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseOptions = %v, want error containing %q", err, tt.want)
			}
		})
	}
	if _, err := ParseOptions([]string{"--help"}, io.Discard); !errors.Is(err, ErrHelp) {
		t.Errorf("--help = %v, want ErrHelp", err)
	}
}

func TestReadToken(t *testing.T) {
	tests := []struct {
		name, content, want, wantErr string
	}{
		{"trims newline", "s3cret\n", "s3cret", ""},
		{"empty", "\n", "", "empty"},
		{"two words", "a b", "", "one word"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadToken(writeFile(t, "token", tt.content))
			if got != tt.want || (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("ReadToken = %q, %v", got, err)
			}
		})
	}
}

func TestTokenFileMustBeOwnerOnly(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		p := writeFile(t, "token", "s3cret\n")
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadToken(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %#o: ReadToken = %v, want a refusal saying chmod 600", mode, err)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		p := writeFile(t, "token", "s3cret\n")
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if tok, err := ReadToken(p); err != nil || tok != "s3cret" {
			t.Errorf("mode %#o: ReadToken = %q, %v", mode, tok, err)
		}
	}
}

func TestEnsureTokenCreatesAnOwnerOnlyTokenOnce(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state", DefaultTokenFileName)
	tok, created, err := EnsureToken(p)
	if err != nil || !created || len(tok) < 20 {
		t.Fatalf("EnsureToken = %q, %v, %v", tok, created, err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, %v", st.Mode(), err)
	}
	again, created, err := EnsureToken(p)
	if err != nil || created || again != tok {
		t.Fatalf("second EnsureToken = %q, %v, %v; want the same token", again, created, err)
	}
}

func TestPFCPOptionsSetTheProxyTimersAndLossPolicy(t *testing.T) {
	o, err := ParseOptions([]string{"--pfcp-upf-loss=move", "--pfcp-heartbeat-interval=1s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c, err := o.PFCP()
	if err != nil {
		t.Fatal(err)
	}
	if c.OnLoss != n4.Move || c.HeartbeatInterval != time.Second || c.T1 != 500*time.Millisecond || c.LossTimeout != 6*time.Second {
		t.Fatalf("PFCP config %+v", c)
	}
	o = DefaultOptions()
	if c, _ := o.PFCP(); c.OnLoss != n4.Release || c.HeartbeatInterval != 10*time.Second || c.T1 != 3*time.Second {
		t.Fatalf("default PFCP config %+v", c)
	}
}

// --attach gives each interface its hook: the default (tc unless set) and
// the ifname=mode entries.
func TestAttachFlagGivesEachInterfaceItsHook(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want map[string]dataplane.Hook
	}{
		{[]string{"--interfaces=eth0,eth1"}, map[string]dataplane.Hook{"eth0": dataplane.HookTC, "eth1": dataplane.HookTC}},
		{[]string{"--interfaces=eth0,eth1", "--attach=xdp"}, map[string]dataplane.Hook{"eth0": dataplane.HookXDP, "eth1": dataplane.HookXDP}},
		{[]string{"--interfaces=eth0,eth1", "--attach=auto,eth1=tc"}, map[string]dataplane.Hook{"eth0": dataplane.HookAuto, "eth1": dataplane.HookTC}},
		{[]string{"--interfaces=eth0,eth1", "--attach=eth0=xdp-generic"}, map[string]dataplane.Hook{"eth0": dataplane.HookXDPGeneric, "eth1": dataplane.HookTC}},
	} {
		o, err := ParseOptions(tt.args, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		for ifname, want := range tt.want {
			if got, err := o.Hook(ifname); err != nil || got != want {
				t.Errorf("%v: %s hook %q, %v, want %q", tt.args, ifname, got, err, want)
			}
		}
	}
}
