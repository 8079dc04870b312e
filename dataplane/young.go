package dataplane

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
)

// The notes of SCTP associations taken up from their packets
// (bpf/lib/sctp_young.h, map young_assocs) are the datapath's own: the map
// is not pinned and the HA sync carries conntrack entries, not notes. A
// node that imports a peer's taken-up association (a second takeover, or
// the old active after its rejoin) or a daemon that restarts would hold
// its paths' entries but no note, and the association's next new path
// would get an endpoint and SNAT port of its own: out of the blue at the
// endpoint, which ABORTs the whole association. Every taken-up entry
// carries what its note holds (the endpoint's tag, the ports, the
// endpoint and the SNAT port), so the note is made again from it.

// takenUpNote is the note a conntrack entry of a taken-up association
// stands for; false for every other entry (replies, other protocols, and
// associations whose INIT this node or its peer saw: vtag_client set).
func takenUpNote(k *bpf.LbCtKey, v *bpf.LbCtVal) (bpf.LbYoungKey, bpf.LbYoungVal, bool) {
	if k.Proto != uint8(ProtoSCTP) || v.Flags&ctFReply != 0 || v.VtagClient != 0 || v.VtagEp == 0 {
		return bpf.LbYoungKey{}, bpf.LbYoungVal{}, false
	}
	return bpf.LbYoungKey{Svc: v.Svc, Vtag: v.VtagEp, Cport: k.Sport, Vport: k.Dport},
		bpf.LbYoungVal{Ep: v.Ep, NatSport: v.NatSport}, true
}

// noteTakenUp writes the note of a taken-up association's entry unless the
// association has one (the first path decided, as in young_note).
func (d *Datapath) noteTakenUp(k *bpf.LbCtKey, v *bpf.LbCtVal) error {
	yk, yv, ok := takenUpNote(k, v)
	if !ok {
		return nil
	}
	if err := d.objs.YoungAssocs.Update(&yk, &yv, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("note taken-up association: %w", err)
	}
	return nil
}

// noteTakenUpFromConntrack makes the notes of the taken-up associations
// conntrack holds (after a restart: the pinned entries outlive the note
// map), from both conntrack maps (IPv4 entries live in conntrack4).
func (d *Datapath) noteTakenUpFromConntrack() error {
	var noteErr error
	walkErr := d.ct().each(func(k bpf.LbCtKey, v *bpf.LbCtVal) {
		if noteErr != nil {
			return
		}
		noteErr = d.noteTakenUp(&k, v)
	})
	return errors.Join(noteErr, walkErr)
}
