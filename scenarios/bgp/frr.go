package bgp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// FRRDir is where Debian's frr package puts its daemons.
const FRRDir = "/usr/lib/frr"

var frrBGP = template.Must(template.New("bgpd").Parse(`hostname router
log stdout debugging
router bgp {{.RouterASN}}
 bgp router-id {{.RouterID}}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 timers bgp 3 9
{{range .Peers}} neighbor {{.Addr}} remote-as {{$.NodeASN}}
 neighbor {{.Addr}} timers connect 1
 neighbor {{.Addr}} bfd profile fast
{{end}} address-family ipv4 unicast
  maximum-paths 8
{{range .Peers}}{{if eq .Fam "ipv4"}}  neighbor {{.Addr}} activate
{{end}}{{end}} exit-address-family
 address-family ipv6 unicast
  maximum-paths 8
{{range .Peers}}{{if eq .Fam "ipv6"}}  neighbor {{.Addr}} activate
{{end}}{{end}} exit-address-family
!
`))

var frrBFD = template.Must(template.New("bfdd").Parse(`hostname router
bfd
 profile fast
  receive-interval {{.BFD}}
  transmit-interval {{.BFD}}
  detect-multiplier {{.Mult}}
 !
!
`))

// FRR runs frr's zebra, bfdd and bgpd in the router namespace, each with
// its own configuration, pid file and sockets in a directory of the lab
// (so several run side by side), as the frr user (FRR refuses root unless
// root is in its vty group).
type FRR struct {
	h     *lab.Host
	dir   string
	procs []*lab.Proc
}

// StartFRR starts zebra, bfdd and bgpd with one BGP session per node and
// family, each with BFD (profile "fast": 100 ms x 3).
func StartFRR(ctx context.Context, h *lab.Host, nodes int) (*FRR, error) {
	if _, err := os.Stat(filepath.Join(FRRDir, "bgpd")); err != nil {
		return nil, errors.New("frr not installed (Debian package frr; hack/install-deps.sh installs it)")
	}
	dir, err := os.MkdirTemp("", "telcolb-frr-")
	if err != nil {
		return nil, err
	}
	var peers []birdPeer
	for n := 1; n <= nodes; n++ {
		peers = append(peers, birdPeer{fmt.Sprintf("lb%d", n), NodeAddr(n, 0).String(), "ipv4"},
			birdPeer{fmt.Sprintf("lb%dv6", n), NodeAddr(n, 1).String(), "ipv6"})
	}
	data := map[string]any{"RouterID": RouterLAN[0], "BFD": BFDIntervalMs, "Mult": BFDMultiplier, "RouterASN": RouterASN, "NodeASN": NodeASN, "Peers": peers}
	confs := map[string]string{"zebra": "hostname router\n"}
	for name, tmpl := range map[string]*template.Template{"bgpd": frrBGP, "bfdd": frrBFD} {
		var b bytes.Buffer
		if err := tmpl.Execute(&b, data); err != nil {
			return nil, err
		}
		confs[name] = b.String()
	}
	return StartFRRWith(ctx, h, dir, confs)
}

// StartFRRWith starts zebra, bfdd and bgpd in h with the given
// configurations (by daemon name) written to dir (a new directory when
// empty), which the FRR value owns.
func StartFRRWith(ctx context.Context, h *lab.Host, dir string, confs map[string]string) (*FRR, error) {
	if _, err := os.Stat(filepath.Join(FRRDir, "bgpd")); err != nil {
		return nil, errors.New("frr not installed (Debian package frr; hack/install-deps.sh installs it)")
	}
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "telcolb-frr-"); err != nil {
			return nil, err
		}
	}
	f := &FRR{h: h, dir: dir}
	for _, name := range []string{"zebra", "bfdd", "bgpd"} {
		if err := os.WriteFile(filepath.Join(dir, name+".conf"), []byte(confs[name]), 0o600); err != nil {
			return nil, err
		}
	}
	// The daemons drop to the frr user: the directory must be theirs.
	if u, err := user.Lookup("frr"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{dir, filepath.Join(dir, "bgpd.conf"), filepath.Join(dir, "bfdd.conf"), filepath.Join(dir, "zebra.conf")} {
			if err := os.Chown(p, uid, gid); err != nil {
				return nil, err
			}
		}
	}
	zserv := filepath.Join(dir, "zserv.api")
	common := func(name string) []string {
		return []string{"-f", filepath.Join(dir, name+".conf"), "-i", filepath.Join(dir, name+".pid"),
			"--vty_socket", dir, "-z", zserv, "-P", "0"}
	}
	start := func(name string, extra ...string) error {
		p, err := h.Start(filepath.Join(FRRDir, name), append(common(name), extra...)...)
		if err != nil {
			return err
		}
		f.procs = append(f.procs, p)
		// The daemon is ready when its vty socket exists.
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(dir, name+".vty")); err == nil {
				return nil
			}
			select {
			case <-p.Done():
				return fmt.Errorf("frr %s exited: %s%s", name, p.Stdout(), p.Stderr())
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("frr %s not up after 20s: %s", name, p.Stderr())
			}
		}
	}
	if err := start("zebra"); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	if err := start("bfdd", "--bfdctl", filepath.Join(dir, "bfdd.sock")); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	if err := start("bgpd"); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return f, nil
}

func (f *FRR) Name() string { return "frr" }

// Vtysh runs one vtysh command against this router's daemons.
func (f *FRR) Vtysh(ctx context.Context, cmd string) (string, error) {
	out, err := f.h.Exec(ctx, "vtysh", "--vty_socket", f.dir, "-c", cmd)
	return string(out), err
}

func (f *FRR) ShowRoute(ctx context.Context, prefix string) (string, error) {
	af := "ipv4"
	if strings.Contains(prefix, ":") {
		af = "ipv6"
	}
	return f.Vtysh(ctx, "show bgp "+af+" unicast "+prefix)
}

// BFDUp reads vtysh show bfd peers brief: session ID, local address, peer
// address, status.
func (f *FRR) BFDUp(ctx context.Context, peer netip.Addr) (bool, error) {
	out, err := f.Vtysh(ctx, "show bfd peers brief")
	if err != nil {
		return false, err
	}
	return bfdTableUp(out, peer, 3), nil
}

// Log is what the daemons printed.
func (f *FRR) Log() string {
	var b strings.Builder
	for _, p := range f.procs {
		b.WriteString(p.Stdout())
		b.WriteString(p.Stderr())
	}
	return b.String()
}

func (f *FRR) Close() error {
	var errs []error
	for i := len(f.procs) - 1; i >= 0; i-- {
		errs = append(errs, f.procs[i].Stop())
	}
	return errors.Join(append(errs, os.RemoveAll(f.dir))...)
}
