package capture

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// NGAPExpect is what an N2 capture is held to by CheckNGAP.
type NGAPExpect struct {
	// MinMessages is the fewest NGAP PDUs tshark must decode (a capture
	// that missed the traffic must not pass).
	MinMessages int
}

// NGAPEvidence is what tshark reports about an N2 capture; Judge decides.
// Kept apart from the tshark runs so the verdict is tested on its own.
type NGAPEvidence struct {
	File     string
	Messages []NGAPMessage
	// Malformed and WrongPPID are frame numbers.
	Malformed []int
	WrongPPID []int
	// DataChunks counts DATA chunks per frame (frames with at least one).
	DataChunks map[int]int
	Checksums  ChecksumReport
}

// NGAPVerdict is the outcome of an N2 capture check.
type NGAPVerdict struct {
	Messages int
	// NonUE and UE count the single-DATA-chunk frames attributed to
	// non-UE-associated and UE-associated signalling.
	NonUE, UE int
	// ChecksumsGood counts checksums tshark verified as correct.
	ChecksumsGood int
	Problems      []string
}

func (v *NGAPVerdict) problem(format string, args ...any) {
	v.Problems = append(v.Problems, fmt.Sprintf(format, args...))
}

// CheckNGAP runs the N2 capture checks every N2 lab shares (the namespace
// lab on usrsctp, the VM lab on kernel SCTP): tshark decodes the NGAP,
// nothing is malformed, every DATA chunk carries PPID 60 (TS 38.412),
// non-UE-associated signalling travels on stream 0 and UE-associated
// signalling on the others, and every checksum (CRC32c included) is good.
// An error means tshark could not be run; what the capture shows is in the
// verdict's Problems.
func CheckNGAP(ctx context.Context, file string, want NGAPExpect) (NGAPVerdict, error) {
	e := NGAPEvidence{File: file, DataChunks: map[int]int{}}
	var err error
	if e.Messages, err = NGAP(ctx, file); err != nil {
		return NGAPVerdict{}, err
	}
	bad, err := Fields(ctx, file, "_ws.malformed || _ws.expert.severity == error", "frame.number")
	if err != nil {
		return NGAPVerdict{}, err
	}
	if e.Malformed, err = frameNumbers(bad); err != nil {
		return NGAPVerdict{}, err
	}
	// A frame matches when any of its DATA chunks has another PPID.
	ppid, err := Fields(ctx, file, "sctp.data_payload_proto_id != 60", "frame.number")
	if err != nil {
		return NGAPVerdict{}, err
	}
	if e.WrongPPID, err = frameNumbers(ppid); err != nil {
		return NGAPVerdict{}, err
	}
	chunks, err := Fields(ctx, file, "sctp.chunk_type == 0", "frame.number", "sctp.data_sid")
	if err != nil {
		return NGAPVerdict{}, err
	}
	for _, r := range chunks {
		f, err := strconv.Atoi(r[0])
		if err != nil {
			return NGAPVerdict{}, fmt.Errorf("capture: frame number %q: %w", r[0], err)
		}
		e.DataChunks[f] = len(splitList(r[1]))
	}
	if e.Checksums, err = Checksums(ctx, file); err != nil {
		return NGAPVerdict{}, err
	}
	return e.Judge(want), nil
}

func frameNumbers(rows [][]string) ([]int, error) {
	out := make([]int, 0, len(rows))
	for _, r := range rows {
		n, err := strconv.Atoi(r[0])
		if err != nil {
			return nil, fmt.Errorf("capture: frame number %q: %w", r[0], err)
		}
		out = append(out, n)
	}
	return out, nil
}

// Judge applies CheckNGAP's rules to the evidence.
func (e NGAPEvidence) Judge(want NGAPExpect) NGAPVerdict {
	base := filepath.Base(e.File)
	v := NGAPVerdict{Messages: len(e.Messages), ChecksumsGood: e.Checksums.Good}
	if len(e.Messages) < want.MinMessages || len(e.Messages) == 0 {
		v.problem("%s: only %d NGAP messages, want at least %d", base, len(e.Messages), max(want.MinMessages, 1))
	}
	if len(e.Malformed) > 0 {
		v.problem("%s: %d malformed frames, first %d", base, len(e.Malformed), e.Malformed[0])
	}
	if len(e.WrongPPID) > 0 {
		v.problem("%s: %d frames with a DATA chunk whose PPID is not 60, first %d", base, len(e.WrongPPID), e.WrongPPID[0])
	}
	if len(e.Checksums.Bad) > 0 || e.Checksums.Good == 0 {
		v.problem("%s: checksums: %d verified good, bad frames %v", base, e.Checksums.Good, e.Checksums.Bad)
	}
	// A frame bundling several DATA chunks cannot be attributed: tshark
	// lists a frame's streams and IDs per frame, and does not decode every
	// chunk of a bundle as NGAP (the kernel bundles far more than usrsctp).
	// Only frames with one DATA chunk and one decoded PDU are judged.
	pdus := map[int]int{}
	for _, m := range e.Messages {
		pdus[m.Frame]++
	}
	for _, m := range e.Messages {
		if pdus[m.Frame] > 1 || e.DataChunks[m.Frame] > 1 {
			continue
		}
		if m.RANUENGAPID < 0 && m.AMFUENGAPID < 0 {
			v.NonUE++
			if m.Stream != 0 {
				v.problem("%s frame %d: non-UE procedure %d on stream %d", base, m.Frame, m.ProcedureCode, m.Stream)
			}
		} else {
			v.UE++
			if m.Stream == 0 {
				v.problem("%s frame %d: UE-associated procedure %d on stream 0", base, m.Frame, m.ProcedureCode)
			}
		}
	}
	if v.NonUE == 0 || v.UE == 0 {
		v.problem("%s: %d non-UE and %d UE-associated single-PDU frames, want both", base, v.NonUE, v.UE)
	}
	return v
}

// String summarises a verdict for a test log.
func (v NGAPVerdict) String() string {
	s := fmt.Sprintf("%d NGAP messages (%d non-UE, %d UE-associated single-PDU frames), %d checksums good", v.Messages, v.NonUE, v.UE, v.ChecksumsGood)
	if len(v.Problems) > 0 {
		s += "; problems: " + strings.Join(v.Problems, "; ")
	}
	return s
}
