package main

import (
	"os"
	"strings"
	"testing"
)

const header = `
enum lb_mode { MODE_DEFAULT = 0, MODE_ONEARM = 1 };
enum lb_sel { SEL_RR = 0, SEL_LEASTCONN = 3 };
enum ct_state {
	CT_NONE = 0,
	CT_TCP_SYN_SENT = 1,
};
enum drop_reason {
	DROP_MALFORMED = 0,
	DROP_SCTP_PARAMS = 6, // a comment
	DROP_MAX = 0x10,
};
enum ct_event_kind { CT_EV_ENTRY = 1, CT_EV_DELETED = 3 };
enum ct_event_found { CT_EVF_ENTRY = 1, CT_EVF_PEER = 2 };
`

func TestGenerateTakesValuesFromTheHeader(t *testing.T) {
	out, err := generate(header)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ModeOnearm  = 1", "SelLeastconn = 3", "CtStateTcpSynSent = 1", "DropSctpParams = 6", "DropMax        = 16", "CtEvDeleted = 3", "CtEvfPeer  = 2"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestGenerateRejectsWhatItCannotRead(t *testing.T) {
	for name, tc := range map[string]struct{ src, want string }{
		"missing enum":    {strings.Replace(header, "enum lb_sel", "enum other", 1), "enum lb_sel not found"},
		"implicit value":  {strings.Replace(header, "MODE_ONEARM = 1", "MODE_ONEARM", 1), `cannot read member "MODE_ONEARM"`},
		"foreign prefix":  {strings.Replace(header, "SEL_RR = 0", "RR = 0", 1), "member RR lacks prefix SEL_"},
		"bad value":       {strings.Replace(header, "CT_NONE = 0", "CT_NONE = X1", 1), `value "X1"`},
		"empty enum body": {strings.Replace(header, "SEL_RR = 0, SEL_LEASTCONN = 3", "", 1), "enum lb_sel has no members"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := generate(tc.src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// The committed header itself must generate (make check-generate compares
// the result with bpf/lb_enums.go).
func TestGenerateReadsLbTypes(t *testing.T) {
	src, err := os.ReadFile("../../include/lb_types.h")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := generate(string(src)); err != nil {
		t.Fatal(err)
	}
}
