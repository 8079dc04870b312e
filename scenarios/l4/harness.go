package l4

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// Ports the standard backends listen on (every backend, all addresses, so
// the same servers serve every mode, DSR included).
const (
	HTTPPort = 8080
	UDPPort  = 9000
	EchoPort = 7000
)

// Env is a lab with telcolb running in its lb namespace and the standard
// servers on every backend.
type Env struct {
	Lab     *lab.Lab
	Daemon  *Daemon
	servers []*Server
}

// EnvConfig sets up an Env.
type EnvConfig struct {
	Lab lab.Config
	// BinDir receives the built binaries (a temp dir when empty).
	BinDir string
	// DaemonArgs are extra telcolb flags.
	DaemonArgs []string
}

// Up builds binaries, the lab, the servers and the daemon. On error it
// tears down what it built.
func Up(ctx context.Context, cfg EnvConfig) (_ *Env, err error) {
	bins, err := Build(ctx, cfg.BinDir)
	if err != nil {
		return nil, err
	}
	l, err := lab.Build(ctx, cfg.Lab)
	if err != nil {
		return nil, err
	}
	e := &Env{Lab: l}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Down(context.Background()))
		}
	}()
	for i, be := range l.Backends {
		id := fmt.Sprintf("be%d", i+1)
		for _, srv := range []struct {
			serve func(*lab.Host, string, string) (*Server, error)
			port  int
		}{{ServeHTTP, HTTPPort}, {ServeUDP, UDPPort}, {ServeTCPEcho, EchoPort}} {
			s, err := srv.serve(be, "[::]:"+strconv.Itoa(srv.port), id)
			if err != nil {
				return nil, err
			}
			e.servers = append(e.servers, s)
		}
		// A UDP server on the wildcard address answers from the route's
		// source, not the VIP the datagram was sent to; DSR clients would
		// drop that. Real DSR UDP services bind the VIP, and so do we.
		if cfg.Lab.DSR {
			for _, vip := range cfg.Lab.DSRVIPs {
				s, err := ServeUDP(be, netip.AddrPortFrom(vip, UDPPort).String(), id)
				if err != nil {
					return nil, err
				}
				e.servers = append(e.servers, s)
			}
		}
	}
	var ifs []string
	for _, i := range l.LB.Ifaces() {
		ifs = append(ifs, i.Name)
	}
	stateDir, err := os.MkdirTemp("", "telcolb-state-")
	if err != nil {
		return nil, err
	}
	d, err := StartDaemon(ctx, DaemonConfig{
		Bin: bins, Host: l.LB, Interfaces: ifs,
		StateDir: stateDir, PinPath: "/sys/fs/bpf/" + l.ID,
		ExtraArgs: cfg.DaemonArgs,
	})
	if err != nil {
		_ = os.RemoveAll(stateDir)
		return nil, err
	}
	e.Daemon = d
	return e, nil
}

// Down destroys the daemon's datapath, stops the servers and removes the lab.
func (e *Env) Down(ctx context.Context) error {
	var errs []error
	if e.Daemon != nil {
		errs = append(errs, e.Daemon.Destroy(ctx))
	}
	for _, s := range e.servers {
		errs = append(errs, s.Close())
	}
	errs = append(errs, e.Lab.Close())
	return errors.Join(errs...)
}

// ClientAddr is the client's address of the given family on link 0.
func (e *Env) ClientAddr(v6 bool) netip.Addr {
	if v6 {
		return e.Lab.ClientIface(0).V6()
	}
	return e.Lab.ClientIface(0).V4()
}

// LBBackendAddr is the lb's own address toward the backends on link 0 (the
// source onearm mode gives).
func (e *Env) LBBackendAddr(v6 bool) netip.Addr {
	if v6 {
		return e.Lab.LBBackendIface(0).V6()
	}
	return e.Lab.LBBackendIface(0).V4()
}

// BackendAddr is backend k's (0-based) address on link 0.
func (e *Env) BackendAddr(k int, v6 bool) netip.Addr {
	if v6 {
		return e.Lab.BackendIface(k, 0).V6()
	}
	return e.Lab.BackendIface(k, 0).V4()
}
