package capture

import (
	"context"
	"strings"
	"testing"
)

// healthyN2Capture is evidence of a good N2 capture: NG Setup on stream 0,
// two UE-associated PDUs on stream 1, one bundle of two DATA chunks.
func healthyN2Capture() NGAPEvidence {
	return NGAPEvidence{
		File: "/tmp/x/n2.pcapng",
		Messages: []NGAPMessage{
			{Frame: 1, Stream: 0, ProcedureCode: 21, RANUENGAPID: -1, AMFUENGAPID: -1},
			{Frame: 2, Stream: 1, ProcedureCode: 15, RANUENGAPID: 7, AMFUENGAPID: -1},
			{Frame: 3, Stream: 1, ProcedureCode: 46, RANUENGAPID: 7, AMFUENGAPID: 9},
			{Frame: 4, Stream: 0, ProcedureCode: 46, RANUENGAPID: 8, AMFUENGAPID: 10}, // bundled: not attributed
		},
		DataChunks: map[int]int{1: 1, 2: 1, 3: 1, 4: 2},
		Checksums:  ChecksumReport{Good: 8},
	}
}

func TestNGAPVerdictFlagsWhatIsWrong(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*NGAPEvidence)
		want   string // "" for a clean verdict
	}{
		{"healthy", func(*NGAPEvidence) {}, ""},
		{"too few messages", func(e *NGAPEvidence) { e.Messages = e.Messages[:3] }, "only 3 NGAP messages"},
		{"no messages at all", func(e *NGAPEvidence) { e.Messages = nil }, "only 0 NGAP messages"},
		{"malformed frame", func(e *NGAPEvidence) { e.Malformed = []int{3} }, "1 malformed frames, first 3"},
		{"wrong PPID", func(e *NGAPEvidence) { e.WrongPPID = []int{2, 4} }, "2 frames with a DATA chunk whose PPID is not 60, first 2"},
		{"bad checksum", func(e *NGAPEvidence) { e.Checksums.Bad = []Frame{{Number: 2, Protocol: "eth:ip:sctp"}} }, "checksums"},
		{"no checksum verified", func(e *NGAPEvidence) { e.Checksums.Good = 0 }, "0 verified good"},
		{"non-UE signalling off stream 0", func(e *NGAPEvidence) { e.Messages[0].Stream = 3 }, "non-UE procedure 21 on stream 3"},
		{"UE signalling on stream 0", func(e *NGAPEvidence) { e.Messages[2].Stream = 0 }, "UE-associated procedure 46 on stream 0"},
		{"only non-UE signalling attributed", func(e *NGAPEvidence) { e.DataChunks[2], e.DataChunks[3] = 2, 3 }, "1 non-UE and 0 UE-associated"},
		{"two PDUs decoded in one frame are not attributed", func(e *NGAPEvidence) {
			e.Messages = append(e.Messages, NGAPMessage{Frame: 1, Stream: 0, ProcedureCode: 21, RANUENGAPID: -1, AMFUENGAPID: -1})
		}, "0 non-UE and 2 UE-associated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := healthyN2Capture()
			c.mutate(&e)
			v := e.Judge(NGAPExpect{MinMessages: 4})
			got := strings.Join(v.Problems, "\n")
			if c.want == "" {
				if got != "" || v.NonUE != 1 || v.UE != 2 {
					t.Fatalf("healthy capture: %v", v)
				}
				return
			}
			if !strings.Contains(got, c.want) || !strings.Contains(got, "n2.pcapng") {
				t.Fatalf("problems %q, want one naming the file and saying %q", got, c.want)
			}
		})
	}
}

// CheckNGAP on a real capture (text2pcap, tshark): one NG Setup Response
// with PPID 46 is flagged for its PPID and for the missing UE signalling.
func TestCheckNGAPReadsTheCapture(t *testing.T) {
	file := sctpPcap(t, ngSetupResponse, 46)
	v, err := CheckNGAP(context.Background(), file, NGAPExpect{MinMessages: 1})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(v.Problems, "\n")
	for _, want := range []string{"1 frames with a DATA chunk whose PPID is not 60, first 1", "1 non-UE and 0 UE-associated"} {
		if !strings.Contains(got, want) {
			t.Errorf("problems %q, want %q", got, want)
		}
	}
	if v.Messages != 1 || v.NonUE != 1 || v.ChecksumsGood < 2 || strings.Contains(got, "checksums") {
		t.Errorf("verdict %v, want 1 non-UE message and good checksums", v)
	}
}
