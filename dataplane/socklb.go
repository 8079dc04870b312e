package dataplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/telcolb/telcolb/bpf"
)

// Socket-level load balancing (bpf/sock.c, bpf/lib/sock_lb.h): traffic the
// node itself originates toward a VIP (a local client, a probe, a proxy)
// never passes tc ingress, so cgroup sock_addr programs balance it where the
// socket names its peer, with the datapath's own maps.

// ErrSocketLBUnsupported is returned by AttachSocketLB on a kernel without
// what the socket programs need (bpf_link for cgroups, the getpeername hooks,
// bpf_get_netns_cookie in sock_addr programs: all there from 5.8; telcolb
// supports 5.15 and later).
var ErrSocketLBUnsupported = errors.New("socket-level load balancing not supported by this kernel")

// sockLinkDir holds the pinned cgroup links, apart from the interfaces'
// links (an interface may be called anything).
const sockLinkDir = "sock-links"

type sockLB struct {
	progs  bpf.SockPrograms
	maps   []*ebpf.Map // the socket programs' own maps (sock_rev, sock_flows)
	links  map[string]link.Link
	cgroup string
}

// probeSocketLB checks the program type and the helpers the programs call.
func probeSocketLB() error {
	if err := features.HaveProgramType(ebpf.CGroupSockAddr); err != nil {
		return fmt.Errorf("%w: cgroup sock_addr programs: %v", ErrSocketLBUnsupported, err)
	}
	for _, h := range []asm.BuiltinFunc{asm.FnGetSocketCookie, asm.FnGetNetnsCookie} {
		if err := features.HaveProgramHelper(ebpf.CGroupSockAddr, h); err != nil {
			return fmt.Errorf("%w: helper %s: %v", ErrSocketLBUnsupported, h, err)
		}
	}
	return nil
}

// netnsCookie is the kernel's cookie of network namespace ns.
func netnsCookie(ns netns.NsHandle) (uint64, error) {
	errc := make(chan error, 1)
	var cookie uint64
	// A thread of its own, thrown away if it cannot go back.
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter datapath netns: %w", err)
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
			unix.Close(fd)
		}
		if serr := netns.Set(orig); serr == nil {
			runtime.UnlockOSThread()
		}
		if err != nil {
			err = fmt.Errorf("netns cookie: %w", err)
		}
		errc <- err
	}()
	err := <-errc
	return cookie, err
}

// sharedMaps are the datapath maps the socket programs read and count in,
// by name.
func (d *Datapath) sharedMaps() map[string]*ebpf.Map {
	o := &d.objs
	return map[string]*ebpf.Map{
		"services": o.Services, "svc_infos": o.SvcInfos, "endpoints": o.Endpoints,
		"sel_tables": o.SelTables, "rr_ctr": o.RrCtr, "ep_active": o.EpActive,
		"affinity": o.Affinity, "maglev": o.Maglev, "svc_stats": o.SvcStats,
		"ep_slot_stats": o.EpSlotStats, "drops": o.Drops,
	}
}

// AttachSocketLB loads the socket programs and attaches them to the cgroup
// v2 directory cgroupPath (the root cgroup balances every process of the
// node). Only sockets of the datapath's network namespace are balanced. The
// links are pinned: they stay attached while the daemon restarts, and a
// restart updates them in place to its programs. Attaching again moves them
// to another cgroup.
func (d *Datapath) AttachSocketLB(cgroupPath string) error {
	if err := probeSocketLB(); err != nil {
		return err
	}
	cgID, err := cgroupID(cgroupPath)
	if err != nil {
		return err
	}
	spec, err := bpf.LoadSock()
	if err != nil {
		return fmt.Errorf("load socket lb spec: %w", err)
	}
	cookie, err := netnsCookie(d.netns)
	if err != nil {
		return err
	}
	if err := spec.Variables["sock_netns"].Set(cookie); err != nil {
		return fmt.Errorf("socket lb netns: %w", err)
	}
	// The socket programs write affinity times the datapath compares.
	if err := setClockVars(spec, d.clock, bpf.SockVarLbClockTickNs, bpf.SockVarLbClockBase); err != nil {
		return fmt.Errorf("socket lb clock: %w", err)
	}
	repl := map[string]*ebpf.Map{}
	for name, m := range d.sharedMaps() {
		if _, ok := spec.Maps[name]; ok {
			repl[name] = m
		}
	}
	var progs bpf.SockPrograms
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: d.cfg.PinPath}, MapReplacements: repl}
	if err := spec.LoadAndAssign(&progs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("load socket lb programs: %+v", ve)
		}
		return fmt.Errorf("load socket lb programs: %w", err)
	}

	dir := filepath.Join(d.cfg.PinPath, sockLinkDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		_ = progs.Close()
		return fmt.Errorf("create %s: %w", dir, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := &sockLB{progs: progs, links: map[string]link.Link{}, cgroup: cgroupPath}
	for name, prog := range sockProgs(&s.progs) {
		l, err := attachSockProg(filepath.Join(dir, name), cgroupPath, cgID, spec.Programs[name].AttachType, prog)
		if err != nil {
			for _, l := range s.links {
				_ = l.Close()
			}
			_ = progs.Close()
			return fmt.Errorf("socket lb %s on %s: %w", name, cgroupPath, err)
		}
		s.links[name] = l
	}
	if old := d.sock; old != nil {
		old.close()
	}
	d.sock = s
	d.log.Info("socket load balancing attached", "cgroup", cgroupPath, "programs", len(s.links))
	return nil
}

// sockProgs names every program of the socket object.
func sockProgs(p *bpf.SockPrograms) map[string]*ebpf.Program {
	return map[string]*ebpf.Program{
		"sock_connect4": p.SockConnect4, "sock_connect6": p.SockConnect6,
		"sock_sendmsg4": p.SockSendmsg4, "sock_sendmsg6": p.SockSendmsg6,
		"sock_recvmsg4": p.SockRecvmsg4, "sock_recvmsg6": p.SockRecvmsg6,
		"sock_getpeername4": p.SockGetpeername4, "sock_getpeername6": p.SockGetpeername6,
	}
}

// attachSockProg updates the link pinned at pin in place when it is on the
// same cgroup (a daemon restart: the hook is never empty), otherwise
// attaches anew and pins.
func attachSockProg(pin, cgroupPath string, cgID uint64, at ebpf.AttachType, prog *ebpf.Program) (link.Link, error) {
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		if cg := info.Cgroup(); ierr == nil && cg != nil && cg.CgroupId == cgID {
			if err := l.Update(prog); err != nil {
				_ = l.Close()
				return nil, fmt.Errorf("update pinned link: %w", err)
			}
			return l, nil
		}
		// Another cgroup (the flag changed): leave it.
		_ = l.Unpin()
		_ = l.Close()
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: at, Program: prog})
	if err != nil {
		return nil, err
	}
	if err := l.Pin(pin); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("pin link (needs bpf_link for cgroups): %w", err)
	}
	return l, nil
}

// cgroupID is the ID of a cgroup v2 directory (its inode number), as link
// info reports it.
func cgroupID(path string) (uint64, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("cgroup %s: not a cgroup v2 directory", path)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	return st.Ino, nil
}

// DetachSocketLB detaches the socket programs (also those a previous
// process left pinned) and forgets the sockets' VIPs.
func (d *Datapath) DetachSocketLB() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sock != nil {
		d.sock.close()
		d.sock = nil
	}
	return unpinSockLinks(d.cfg.PinPath)
}

func unpinSockLinks(pinPath string) error {
	dir := filepath.Join(pinPath, sockLinkDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket lb links: %w", err)
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("socket lb link %s: %w", e.Name(), err))
			continue
		}
		errs = append(errs, l.Unpin(), l.Close())
	}
	return errors.Join(errs...)
}

// SocketLB reports the cgroup the socket programs of this process are on,
// "" when they are not attached.
func (d *Datapath) SocketLB() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sock == nil {
		return ""
	}
	return d.sock.cgroup
}

// close releases the handles; pinned links stay attached.
func (s *sockLB) close() {
	names := make([]string, 0, len(s.links))
	for n := range s.links {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		_ = s.links[n].Close()
	}
	_ = s.progs.Close()
}

// CgroupV2Root is where the cgroup v2 hierarchy is mounted
// (/sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one).
func CgroupV2Root() (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup v2: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// ID parent major:minor root mountpoint options ... - fstype source ...
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 1 && g[0] == "cgroup2" && f[3] == "/" {
			return f[4], nil
		}
	}
	return "", errors.New("find cgroup v2: no cgroup2 mount")
}
