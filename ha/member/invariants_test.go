package member

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// checkStep states what must hold after every step, whatever arrived:
//   - every VIP has exactly one owner among the eligible (alive and ready)
//     members as this node sees them, and it is the rendezvous winner among
//     them; no owner at all only when no member is eligible;
//   - Owned is exactly the VIPs whose owner is this node;
//   - a dead member is never ready; self counts as alive;
//   - ownership changes only with liveness: when the eligible set did not
//     change in the step, no VIP present before and after changed owner;
//   - Output.Ownership lists exactly the VIPs whose owner changed;
//   - a started machine always asks to be woken, after now and no later
//     than one heartbeat interval away.
//
// before is the snapshot taken before the step. It returns "" when they
// hold, else what broke.
func checkStep(m *Machine, before snapshot, now time.Time, out Output) string {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	after := snap(m)
	el := m.eligible()
	for v, o := range m.vips {
		want := pickOwner(el, v)
		if o != want {
			bad("vip %v owned by %q, rendezvous winner among %v is %q", v, o, el, want)
		}
		if len(el) > 0 && !slices.Contains(el, o) {
			bad("vip %v owner %q not eligible (%v)", v, o, el)
		}
	}
	var owned []netip.Addr
	for v, o := range m.vips {
		if o == m.self {
			owned = append(owned, v)
		}
	}
	slices.SortFunc(owned, netip.Addr.Compare)
	if !slices.Equal(owned, m.Owned()) {
		bad("Owned() %v, owners say %v", m.Owned(), owned)
	}
	for _, p := range m.peers {
		if !p.alive && p.ready {
			bad("member %s dead but ready", p.name)
		}
	}
	if slices.Equal(before.eligible, after.eligible) {
		for v, o := range before.owners {
			if n, ok := after.owners[v]; ok && n != o {
				bad("vip %v moved %q -> %q without a liveness change (eligible %v)", v, o, n, after.eligible)
			}
		}
	}
	changed := map[netip.Addr]OwnershipChange{}
	for _, c := range out.Ownership {
		if _, dup := changed[c.VIP]; dup {
			bad("vip %v listed twice in Ownership", c.VIP)
		}
		changed[c.VIP] = c
	}
	for v, o := range after.owners {
		old, was := before.owners[v]
		c, listed := changed[v]
		switch {
		case was && old != o && (!listed || c.Old != old || c.New != o):
			bad("vip %v changed %q -> %q, output says %+v", v, old, o, c)
		case was && old == o && listed:
			bad("vip %v unchanged but listed %+v", v, c)
		case !was && o != "" && (!listed || c.New != o):
			bad("new vip %v owned by %q, output says %+v", v, o, c)
		}
	}
	for v, o := range before.owners {
		if _, ok := after.owners[v]; !ok && o != "" {
			if c, listed := changed[v]; !listed || c.New != "" {
				bad("removed vip %v not reported (%+v)", v, c)
			}
		}
	}
	if m.started {
		if !out.Wake.After(now) {
			bad("wake %v not after now %v", out.Wake, now)
		}
		if out.Wake.After(now.Add(m.interval)) {
			bad("wake %v more than an interval after now %v", out.Wake, now)
		}
	}
	return strings.Join(errs, "; ")
}

type snapshot struct {
	owners   map[netip.Addr]string
	eligible []string
}

func snap(m *Machine) snapshot {
	return snapshot{owners: m.Owners(), eligible: m.eligible()}
}
