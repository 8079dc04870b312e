package app

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/dataplane"
)

// TestSCTPAssociationsByPathCount: the datapath's association records of
// an SCTP service come out as telcolb_sctp_associations by path count,
// summed over the service's rules, with no series for counts that have no
// association; other protocols' records (none exist, but the datapath is
// not trusted) are not exported.
func TestSCTPAssociationsByPathCount(t *testing.T) {
	env := newEnv(t, nil)
	ctx := context.Background()
	sig := api.Service{Name: "sig", VIP: "10.96.0.20", Port: 36412, Protocol: api.ProtocolSCTP,
		Endpoints: []api.Endpoint{{Address: "10.0.0.1", Port: 36412}}}
	for _, s := range []api.Service{webService(), sig} {
		if err := env.client(t, "").ApplyService(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	env.dp.mu.Lock()
	env.dp.assocPaths = map[uint32][dataplane.MaxAssocPaths]uint64{}
	for id, s := range env.dp.services {
		switch s.Proto {
		case dataplane.ProtoSCTP:
			env.dp.assocPaths[id] = [dataplane.MaxAssocPaths]uint64{3, 2, 0, 1}
		default:
			env.dp.assocPaths[id] = [dataplane.MaxAssocPaths]uint64{9, 9, 9, 9}
		}
	}
	env.dp.mu.Unlock()
	want := `
# HELP telcolb_sctp_associations Live SCTP associations of a datapath service by the number of client addresses (paths) the LB knows for them; a series per path count that has associations.
# TYPE telcolb_sctp_associations gauge
telcolb_sctp_associations{paths="1",service="sig"} 3
telcolb_sctp_associations{paths="2",service="sig"} 2
telcolb_sctp_associations{paths="4",service="sig"} 1
`
	if err := testutil.CollectAndCompare(&collector{s: env.srv}, strings.NewReader(want), "telcolb_sctp_associations"); err != nil {
		t.Error(err)
	}
}
