package ngap

import (
	"fmt"

	"github.com/free5gc/aper"
	"github.com/free5gc/ngap/ngapType"
)

// RANNodeID returns the Global RAN Node ID an NG Setup Request carries,
// written "<MCC><MNC>-<kind>-<id>" (kind gnb, ngenb or n3iwf; id in
// decimal), e.g. "00101-gnb-1". It names a gNB in metrics: the operator
// assigns these identities, so they form a known, finite set.
func RANNodeID(pdu *ngapType.NGAPPDU) (string, error) {
	if pdu == nil || pdu.Present != ngapType.NGAPPDUPresentInitiatingMessage || pdu.InitiatingMessage == nil ||
		pdu.InitiatingMessage.Value.NGSetupRequest == nil {
		return "", fmt.Errorf("%w: not an NG Setup Request", ErrMalformed)
	}
	for _, ie := range pdu.InitiatingMessage.Value.NGSetupRequest.ProtocolIEs.List {
		if ie.Id.Value != ngapType.ProtocolIEIDGlobalRANNodeID || ie.Value.GlobalRANNodeID == nil {
			continue
		}
		return formatRANNode(ie.Value.GlobalRANNodeID)
	}
	return "", fmt.Errorf("%w: NG Setup Request without Global RAN Node ID", ErrMalformed)
}

func formatRANNode(g *ngapType.GlobalRANNodeID) (string, error) {
	var (
		plmn ngapType.PLMNIdentity
		kind string
		id   *aper.BitString
	)
	switch {
	case g.Present == ngapType.GlobalRANNodeIDPresentGlobalGNBID && g.GlobalGNBID != nil:
		plmn, kind, id = g.GlobalGNBID.PLMNIdentity, "gnb", g.GlobalGNBID.GNBID.GNBID
	case g.Present == ngapType.GlobalRANNodeIDPresentGlobalNgENBID && g.GlobalNgENBID != nil:
		e := g.GlobalNgENBID.NgENBID
		plmn, kind = g.GlobalNgENBID.PLMNIdentity, "ngenb"
		switch e.Present {
		case ngapType.NgENBIDPresentMacroNgENBID:
			id = e.MacroNgENBID
		case ngapType.NgENBIDPresentShortMacroNgENBID:
			id = e.ShortMacroNgENBID
		case ngapType.NgENBIDPresentLongMacroNgENBID:
			id = e.LongMacroNgENBID
		}
	case g.Present == ngapType.GlobalRANNodeIDPresentGlobalN3IWFID && g.GlobalN3IWFID != nil:
		plmn, kind, id = g.GlobalN3IWFID.PLMNIdentity, "n3iwf", g.GlobalN3IWFID.N3IWFID.N3IWFID
	}
	if kind == "" || id == nil {
		return "", fmt.Errorf("%w: Global RAN Node ID choice %d", ErrMalformed, g.Present)
	}
	if id.BitLength == 0 || id.BitLength > 32 {
		return "", fmt.Errorf("%w: %s ID of %d bits", ErrMalformed, kind, id.BitLength)
	}
	v, err := bits(*id, id.BitLength)
	if err != nil {
		return "", err
	}
	p, err := plmnString(plmn.Value)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s-%s-%d", p, kind, v), nil
}

// plmnString decodes a TS 38.413 PLMN Identity (TBCD: MCC digit 2 | digit
// 1, MNC digit 3 (F for a 2-digit MNC) | MCC digit 3, MNC digit 2 | digit 1)
// as its digits, MCC then MNC.
func plmnString(b []byte) (string, error) {
	if len(b) != 3 {
		return "", fmt.Errorf("%w: PLMN identity of %d bytes", ErrMalformed, len(b))
	}
	digits := []byte{b[0] & 0xf, b[0] >> 4, b[1] & 0xf, b[2] & 0xf, b[2] >> 4, b[1] >> 4}
	n := 6
	if digits[5] == 0xf {
		n = 5
	}
	out := make([]byte, n)
	for i := range n {
		if digits[i] > 9 {
			return "", fmt.Errorf("%w: PLMN identity %x is not BCD", ErrMalformed, b)
		}
		out[i] = '0' + digits[i]
	}
	return string(out), nil
}
