package n2

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

func TestParsePointers(t *testing.T) {
	tests := []struct {
		in      string
		want    []uint8
		wantErr string
	}{
		{"", nil, ""},
		{"2\n", []uint8{2}, ""},
		{" 1 63\t7 ", []uint8{1, 63, 7}, ""},
		{"64", nil, `"64"`},
		{"-1", nil, `"-1"`},
		{"two", nil, `"two"`},
	}
	for _, tt := range tests {
		got, err := ParsePointers(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParsePointers(%q) = %v, %v; want error naming %s", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParsePointers(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func FuzzParsePointers(f *testing.F) {
	for _, s := range []string{"", "1 2 3", "63", "64", "x", "\n\n2\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParsePointers(s)
		if err != nil {
			return
		}
		if len(got) != len(strings.Fields(s)) {
			t.Fatalf("%q: %d pointers from %d fields", s, len(got), len(strings.Fields(s)))
		}
		for _, p := range got {
			if p > 63 {
				t.Fatalf("%q: pointer %d out of range", s, p)
			}
		}
	})
}

// healthyRun is a one-UE run with AMFs 1 and 2, everything as it should be.
func healthyRun() ([]GNBReport, []AMFReport) {
	g := []GNBReport{{Name: "g", UEs: []UEResult{
		{Index: 0, RANUEID: 1, AMFUEID: 1<<32 | 1, RegPointer: 1, Registered: true, UplinkPointer: 1, Paged: true, SRRANUEID: 3, SRAMFUEID: 1<<32 | 2, SRPointer: 1, SRComplete: true},
		{Index: 1, RANUEID: 2, AMFUEID: 2<<32 | 1, RegPointer: 2, Registered: true, UplinkPointer: 2, Paged: true, SRRANUEID: 4, SRAMFUEID: 2<<32 | 2, SRPointer: 2, SRComplete: true},
	}}}
	a := []AMFReport{
		{Name: "a1", Pointer: 1, UEs: []UERecord{
			{GNB: "g", RANUEID: 1, AMFUEID: 1<<32 | 1, Uplinks: 2, Setup: true, Released: true},
			{GNB: "g", RANUEID: 3, AMFUEID: 1<<32 | 2, STMSI: true, Known: true, Uplinks: 1, Setup: true, Released: true},
		}},
		{Name: "a2", Pointer: 2, UEs: []UERecord{
			{GNB: "g", RANUEID: 2, AMFUEID: 2<<32 | 1, Uplinks: 2, Setup: true, Released: true},
			{GNB: "g", RANUEID: 4, AMFUEID: 2<<32 | 2, STMSI: true, Known: true, Uplinks: 1, Setup: true, Released: true},
		}},
	}
	return g, a
}

func TestCheckFlagsWhatWentWrong(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(g []GNBReport, a []AMFReport) ([]GNBReport, []AMFReport)
		dead    int
		wantSub string
	}{
		{"healthy", func(g []GNBReport, a []AMFReport) ([]GNBReport, []AMFReport) { return g, a }, -1, ""},
		{"service request on the wrong AMF", func(g []GNBReport, a []AMFReport) ([]GNBReport, []AMFReport) {
			g[0].UEs[0].SRPointer = 2
			return g, a
		}, -1, "service request with 5G-S-TMSI of AMF 1 went to 2"},
		{"AMF never saw the UE", func(g []GNBReport, a []AMFReport) ([]GNBReport, []AMFReport) {
			a[0].UEs = a[0].UEs[1:]
			return g, a
		}, -1, "AMF 1 has no matching record"},
		{"uplink answered by another AMF", func(g []GNBReport, a []AMFReport) ([]GNBReport, []AMFReport) {
			g[0].UEs[1].UplinkPointer = 1
			return g, a
		}, -1, "uplink answered by AMF 1"},
		{"not paged", func(g []GNBReport, a []AMFReport) ([]GNBReport, []AMFReport) {
			g[0].UEs[0].Paged = false
			return g, a
		}, -1, "not paged"},
		{"dead AMF's UE not released", func(g []GNBReport, a []AMFReport) ([]GNBReport, []AMFReport) {
			return g, a[:1]
		}, 2, "was not released"},
		{"live AMF's UE released", func(g []GNBReport, a []AMFReport) ([]GNBReport, []AMFReport) {
			g[0].UEs[0].NetworkReleased = true
			return g, a
		}, -1, "released by the network although"},
		{"page on the wrong gNB", func(g []GNBReport, a []AMFReport) ([]GNBReport, []AMFReport) {
			g[0].UnknownPages = 1
			return g, a
		}, -1, "pages for UEs it does not serve"},
		{"simulator error", func(g []GNBReport, a []AMFReport) ([]GNBReport, []AMFReport) {
			a[1].Errors = []string{"boom"}
			return g, a
		}, -1, "amf a2: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, a := tt.breakIt(healthyRun())
			v := Check(g, a, tt.dead)
			if tt.wantSub == "" {
				if len(v.Problems) != 0 || v.ServiceRequests != 2 {
					t.Fatalf("healthy run: %v, %d service requests", v.Problems, v.ServiceRequests)
				}
				return
			}
			if !strings.Contains(strings.Join(v.Problems, "\n"), tt.wantSub) {
				t.Errorf("problems %q lack %q", v.Problems, tt.wantSub)
			}
		})
	}
}

// FuzzAMFSurvivesAnyPDU feeds arbitrary bytes to the AMF simulator, which
// must record them as errors and still answer NG Setup.
func FuzzAMFSurvivesAnyPDU(f *testing.F) {
	ngapl.SilenceLibraryLogs()
	setup, err := ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: PLMN, GNBID: 1, GNBIDBits: 22, Name: "g", TACs: []uint32{TAC}, Slices: []ngapl.SNSSAI{{SST: 1}}})
	if err != nil {
		f.Fatal(err)
	}
	ul, _ := ngapl.UplinkNASTransport(5, 5, nil, ngapl.Location{PLMN: PLMN, TAC: TAC, CellID: 1})
	for _, s := range [][]byte{nil, {0}, setup, ul, setup[:len(setup)/2]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n := memory.New(memory.Config{})
		at := transport.Endpoint{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Port: 38412}
		a, err := NewAMF(AMFConfig{Name: "a", Transport: n, Listen: at, SetID: 1, Pointer: 1})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := a.Listen()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		go func() { _ = a.Serve(ctx, ln) }()
		c, err := n.Dial(ctx, nil, at)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, m := range []transport.Message{{Stream: 1, PPID: ngapl.PPID, Data: b}, {PPID: ngapl.PPID, Data: setup}} {
			if err := c.Send(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		for {
			m, err := c.Recv(ctx)
			if err != nil {
				t.Fatalf("AMF stopped answering after %x: %v", b, err)
			}
			if k, err := ngapl.NewDecoder(ngapl.DecoderConfig{}).Key(m.Data); err == nil && k.Procedure == ngapType.ProcedureCodeNGSetup && k.Type == ngapl.Successful {
				return
			}
		}
	})
}
