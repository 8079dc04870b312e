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
//   - Owned is exactly the VIPs whose owner is this node and that are not
//     fenced; a fenced VIP is owned by this node by the rules, and its
//     fence ends after now and no later than the hold time away;
//   - Output.Fencing lists exactly the VIPs whose fence began or ended,
//     Output.Announce only VIPs this node answers for;
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
		if o == m.self && !slices.Contains(after.fenced, v) {
			owned = append(owned, v)
		}
	}
	for _, v := range after.fenced {
		f := m.fences[v]
		if m.vips[v] != m.self {
			bad("vip %v fenced but owned by %q", v, m.vips[v])
		}
		if !f.until.After(now) || f.until.After(now.Add(m.hold)) {
			bad("vip %v fenced until %v, now %v, hold %v", v, f.until, now, m.hold)
		}
		if m.started && out.Wake.After(f.until) {
			bad("wake %v after vip %v's fence ends at %v", out.Wake, v, f.until)
		}
	}
	fc := map[netip.Addr]FenceChange{}
	for _, c := range out.Fencing {
		if _, dup := fc[c.VIP]; dup {
			bad("vip %v listed twice in Fencing", c.VIP)
		}
		fc[c.VIP] = c
	}
	for _, v := range append(slices.Clone(before.fenced), after.fenced...) {
		was, is := slices.Contains(before.fenced, v), slices.Contains(after.fenced, v)
		c, listed := fc[v]
		if was != is && (!listed || c.Fenced != is) {
			bad("vip %v fenced %v -> %v, output says %+v", v, was, is, c)
		}
		if was == is && listed {
			bad("vip %v fence unchanged (%v) but listed %+v", v, is, c)
		}
	}
	for v, c := range fc {
		if !slices.Contains(before.fenced, v) && !slices.Contains(after.fenced, v) {
			bad("vip %v never fenced but listed %+v", v, c)
		}
	}
	for _, v := range out.Announce {
		if !slices.Contains(owned, v) {
			bad("announce %v, which this node does not answer for (owned %v)", v, owned)
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
	fenced   []netip.Addr
}

func snap(m *Machine) snapshot {
	return snapshot{owners: m.Owners(), eligible: m.eligible(), fenced: m.Fenced()}
}
