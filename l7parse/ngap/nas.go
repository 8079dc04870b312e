package ngap

// The N2 proxy reads one thing from NAS: the 5GS mobile identity of an
// initial Registration Request or Service Request (TS 24.501 8.2.6, 8.2.16,
// 9.11.3.4), so that a UE whose gNB sent no 5G-S-TMSI but whose NAS names
// its AMF by 5G-GUTI lands on that AMF. Nothing else is parsed and the NAS
// message is relayed unchanged.

// NASIdentityKind says what ReadNASIdentity found.
type NASIdentityKind uint8

const (
	// NASAbsent: no NAS-PDU was read (not an Initial UE Message).
	NASAbsent NASIdentityKind = iota
	// NASMalformed: the NAS-PDU is not a well-formed 5GMM message.
	NASMalformed
	// NASCiphered: the message is ciphered (security header type 2 or 4);
	// the identity cannot be read, and is not guessed.
	NASCiphered
	// NASNoIdentity: a readable 5GMM message that is neither a Registration
	// Request nor a Service Request, or one with an identity steering does
	// not use (IMEI, IMEISV, MAC address, EUI-64, none).
	NASNoIdentity
	// NASSUCI: a new UE (Subscription Concealed Identifier).
	NASSUCI
	// NASGUTI: a 5G-GUTI; Region, SetID, Pointer and TMSI are set.
	NASGUTI
	// NASSTMSI: a 5G-S-TMSI (Service Request); SetID, Pointer and TMSI are set.
	NASSTMSI
)

func (k NASIdentityKind) String() string {
	return [...]string{"absent", "malformed", "ciphered", "no-identity", "suci", "5g-guti", "5g-s-tmsi"}[min(int(k), 6)]
}

// NASIdentity is the UE identity of an initial NAS message.
type NASIdentity struct {
	Kind    NASIdentityKind
	PLMN    [3]byte // 5G-GUTI only
	Region  uint8   // 5G-GUTI only
	SetID   uint16  // 10 bits
	Pointer uint8   // 6 bits
	TMSI    uint32
}

const (
	epd5GMM = 0x7e

	msgRegistrationRequest = 0x41
	msgServiceRequest      = 0x4c

	idSUCI  = 1
	idGUTI  = 2
	idSTMSI = 4
)

// ReadNASIdentity reads the 5GS mobile identity of a plain (or integrity
// protected but not ciphered) Registration Request or Service Request.
func ReadNASIdentity(b []byte) NASIdentity {
	if len(b) < 3 || b[0] != epd5GMM {
		return NASIdentity{Kind: NASMalformed}
	}
	switch sht := b[1] & 0x0f; sht {
	case 0:
	case 1, 3:
		// Integrity protected, not ciphered (24.501 9.1.1): MAC (4 octets)
		// and sequence number (1), then the plain message.
		if len(b) < 7 {
			return NASIdentity{Kind: NASMalformed}
		}
		b = b[7:]
		if len(b) < 3 || b[0] != epd5GMM || b[1]&0x0f != 0 {
			return NASIdentity{Kind: NASMalformed}
		}
	case 2, 4:
		return NASIdentity{Kind: NASCiphered}
	default:
		return NASIdentity{Kind: NASMalformed}
	}
	if b[2] != msgRegistrationRequest && b[2] != msgServiceRequest {
		return NASIdentity{Kind: NASNoIdentity}
	}
	// Octet 4 is ngKSI with the registration or service type; the 5GS
	// mobile identity follows as LV-E (two-octet length).
	if len(b) < 6 {
		return NASIdentity{Kind: NASMalformed}
	}
	n := int(b[4])<<8 | int(b[5])
	id := b[6:]
	if n < 1 || n > len(id) {
		return NASIdentity{Kind: NASMalformed}
	}
	id = id[:n]
	switch id[0] & 0x07 {
	case idSUCI:
		return NASIdentity{Kind: NASSUCI}
	case idGUTI:
		// 9.11.3.4: type octet, MCC/MNC (3), AMF Region ID, AMF Set ID (10
		// bits) and AMF Pointer (6 bits) in two octets, 5G-TMSI (4).
		if n != 11 {
			return NASIdentity{Kind: NASMalformed}
		}
		x := NASIdentity{Kind: NASGUTI, Region: id[4]}
		copy(x.PLMN[:], id[1:4])
		x.SetID, x.Pointer, x.TMSI = setPointerTMSI(id[5:])
		return x
	case idSTMSI:
		if n != 7 {
			return NASIdentity{Kind: NASMalformed}
		}
		x := NASIdentity{Kind: NASSTMSI}
		x.SetID, x.Pointer, x.TMSI = setPointerTMSI(id[1:])
		return x
	}
	return NASIdentity{Kind: NASNoIdentity}
}

func setPointerTMSI(b []byte) (uint16, uint8, uint32) {
	set := uint16(b[0])<<2 | uint16(b[1]>>6)
	return set, b[1] & 0x3f, uint32(b[2])<<24 | uint32(b[3])<<16 | uint32(b[4])<<8 | uint32(b[5])
}

// RegistrationRequestGUTI builds a plain initial Registration Request whose
// identity is the given 5G-GUTI (for tests and simulators; a real UE adds
// capability IEs the proxy never reads).
func RegistrationRequestGUTI(plmn [3]byte, region uint8, set uint16, pointer uint8, tmsi uint32) []byte {
	return []byte{epd5GMM, 0x00, msgRegistrationRequest, 0x01, // ngKSI 0, initial registration, FOR
		0x00, 0x0b, 0xf2, plmn[0], plmn[1], plmn[2], region,
		byte(set >> 2), byte(set<<6) | pointer&0x3f,
		byte(tmsi >> 24), byte(tmsi >> 16), byte(tmsi >> 8), byte(tmsi)}
}
