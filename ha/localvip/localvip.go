// Package localvip makes VIPs that the daemon terminates itself (N2 and
// PFCP proxy services) local addresses of the node, on a dummy interface
// (telcolb0 by default, created if absent), while some service holds them.
//
// What it added is recorded in a state file before the address is added, so
// that it removes only addresses it added (an address present already, on
// any interface, is used as it is and never removed) and so that a daemon
// restart keeps them: nothing is removed at start; Reconcile, called once the
// restored services hold their VIPs again, removes what no service holds.
package localvip

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultInterface holds the local VIPs.
const DefaultInterface = "telcolb0"

// Config configures a Manager.
type Config struct {
	// Interface is the dummy interface (DefaultInterface if empty).
	Interface string
	// StateFile records the addresses the manager added (required).
	StateFile string
	Logger    *slog.Logger
	// Netlink is the handle used (tests pass one bound to a namespace);
	// nil means the current namespace.
	Netlink *netlink.Handle
}

// Manager adds and removes local VIPs. Safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger
	nl  *netlink.Handle

	mu    sync.Mutex
	added map[netip.Addr]bool            // addresses we added (as recorded)
	holds map[string]map[netip.Addr]bool // holder -> VIPs
}

type stateFile struct {
	Interface string       `json:"interface"`
	Added     []netip.Addr `json:"added"`
}

// New reads the state file; it changes nothing on the node until Hold.
func New(cfg Config) (*Manager, error) {
	if cfg.Interface == "" {
		cfg.Interface = DefaultInterface
	}
	if cfg.StateFile == "" {
		return nil, errors.New("localvip: a state file is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	nl := cfg.Netlink
	if nl == nil {
		// Route family only: a handle for every family fails on kernels
		// without XFRM or netfilter netlink (Debian's 6.1 in the VM lab).
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("localvip: netlink: %w", err)
		}
		nl = h
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, nl: nl, added: map[netip.Addr]bool{}, holds: map[string]map[netip.Addr]bool{}}
	b, err := os.ReadFile(cfg.StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("localvip: %w", err)
	default:
		var st stateFile
		if err := json.Unmarshal(b, &st); err != nil {
			// Losing the record means leaving addresses behind, never
			// removing one we did not add: move it aside and go on.
			aside := cfg.StateFile + ".damaged"
			_ = os.Rename(cfg.StateFile, aside)
			m.log.Error("localvip: state file damaged, moved aside; addresses it listed are left in place", "file", cfg.StateFile, "movedTo", aside, "err", err)
			break
		}
		if st.Interface != "" && st.Interface != cfg.Interface {
			m.log.Warn("localvip: state file is for another interface; its addresses are left in place", "file", cfg.StateFile, "interface", st.Interface)
			break
		}
		for _, a := range st.Added {
			m.added[a] = true
		}
	}
	return m, nil
}

// Hold sets the VIPs holder (a service name) needs local; nil releases
// them. A VIP no holder needs any more is removed if the manager added it.
func (m *Manager) Hold(holder string, vips []netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[netip.Addr]bool{}
	for _, v := range vips {
		want[v.Unmap()] = true
	}
	old := m.holds[holder]
	if len(want) == 0 {
		delete(m.holds, holder)
	} else {
		m.holds[holder] = want
	}
	var errs []error
	for v := range want {
		if err := m.ensureLocked(v); err != nil {
			errs = append(errs, err)
		}
	}
	for v := range old {
		if !want[v] && !m.heldLocked(v) {
			errs = append(errs, m.dropLocked(v))
		}
	}
	return errors.Join(errs...)
}

// Reconcile removes the addresses the manager added that no holder needs:
// those of services deleted while the daemon was down. Call it once the
// restored services have called Hold.
func (m *Manager) Reconcile() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for v := range m.added {
		if !m.heldLocked(v) {
			errs = append(errs, m.dropLocked(v))
		}
	}
	return errors.Join(errs...)
}

// Local reports whether vip is held local by some service.
func (m *Manager) Local(vip netip.Addr) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.heldLocked(vip.Unmap())
}

// Added returns the addresses the manager added, sorted.
func (m *Manager) Added() []netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	var r []netip.Addr
	for v := range m.added {
		r = append(r, v)
	}
	slices.SortFunc(r, netip.Addr.Compare)
	return r
}

func (m *Manager) heldLocked(v netip.Addr) bool {
	for _, h := range m.holds {
		if h[v] {
			return true
		}
	}
	return false
}

func prefix(v netip.Addr) *netlink.Addr {
	bits := 32
	if v.Is6() {
		bits = 128
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: v.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
	if v.Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// ensureLocked makes v local: present anywhere already is enough (then the
// interface is not even created, so a node whose kernel cannot create it
// still serves VIPs configured by hand).
func (m *Manager) ensureLocked(v netip.Addr) error {
	present, err := m.presentLocked(v)
	if err != nil {
		return err
	}
	if present {
		// Ours from before a restart (kept, no flap) or somebody else's
		// (used as it is, never removed: it is not in m.added).
		return nil
	}
	link, err := m.linkLocked()
	if err != nil {
		return err
	}
	m.added[v] = true
	if err := m.saveLocked(); err != nil {
		delete(m.added, v)
		return err
	}
	if err := m.nl.AddrAdd(link, prefix(v)); err != nil && !errors.Is(err, unix.EEXIST) {
		delete(m.added, v)
		_ = m.saveLocked()
		return fmt.Errorf("localvip: add %v to %s: %w", v, m.cfg.Interface, err)
	}
	m.log.Info("localvip: VIP made local", "vip", v, "interface", m.cfg.Interface)
	return nil
}

func (m *Manager) dropLocked(v netip.Addr) error {
	if !m.added[v] {
		return nil
	}
	link, err := m.nl.LinkByName(m.cfg.Interface)
	if err == nil {
		err = m.nl.AddrDel(link, prefix(v))
		if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) {
			err = nil // gone already
		}
	} else if _, ok := err.(netlink.LinkNotFoundError); ok {
		err = nil // interface deleted by someone: the address went with it
	}
	if err != nil {
		return fmt.Errorf("localvip: remove %v from %s: %w", v, m.cfg.Interface, err)
	}
	delete(m.added, v)
	m.log.Info("localvip: VIP no longer local", "vip", v, "interface", m.cfg.Interface)
	return m.saveLocked()
}

// presentLocked reports whether v is a local address on any interface.
func (m *Manager) presentLocked(v netip.Addr) (bool, error) {
	fam := netlink.FAMILY_V4
	if v.Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := m.nl.AddrList(nil, fam)
	if err != nil {
		return false, fmt.Errorf("localvip: list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == v {
			return true, nil
		}
	}
	return false, nil
}

// linkLocked returns the interface, creating it (dummy; ifb where the
// kernel has no dummy driver) and bringing it up.
func (m *Manager) linkLocked() (netlink.Link, error) {
	link, err := m.nl.LinkByName(m.cfg.Interface)
	if _, notFound := err.(netlink.LinkNotFoundError); notFound {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = m.cfg.Interface
		err = m.nl.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
		if err != nil && !errors.Is(err, unix.EEXIST) {
			// Kernels built without the dummy driver (no modules) still
			// have ifb, which holds addresses just as well.
			m.log.Info("localvip: no dummy interface support, using ifb", "interface", m.cfg.Interface, "err", err)
			err = m.nl.LinkAdd(&netlink.Ifb{LinkAttrs: attrs})
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("localvip: create %s: %w", m.cfg.Interface, err)
		}
		link, err = m.nl.LinkByName(m.cfg.Interface)
		if err == nil {
			m.log.Info("localvip: interface created", "interface", m.cfg.Interface, "type", link.Type())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("localvip: interface %s: %w", m.cfg.Interface, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := m.nl.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("localvip: set %s up: %w", m.cfg.Interface, err)
		}
	}
	return link, nil
}

func (m *Manager) saveLocked() error {
	st := stateFile{Interface: m.cfg.Interface}
	for v := range m.added {
		st.Added = append(st.Added, v)
	}
	slices.SortFunc(st.Added, netip.Addr.Compare)
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("localvip: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(m.cfg.StateFile), 0o755); err != nil {
		return fmt.Errorf("localvip: %w", err)
	}
	tmp := m.cfg.StateFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("localvip: write state: %w", err)
	}
	if err := os.Rename(tmp, m.cfg.StateFile); err != nil {
		return fmt.Errorf("localvip: write state: %w", err)
	}
	return nil
}
