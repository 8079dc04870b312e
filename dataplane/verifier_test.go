package dataplane

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseVerifierStats(t *testing.T) {
	// The tail of a 6.1 verifier log at level "stats".
	log := "func#0 @0\nprocessed 48213 insns (limit 1000000) max_states_per_insn 16 total_states 2891 peak_states 1337 mark_read 201\n" +
		"verification time 812345 usec\nstack depth 96+0+32+64+16+0+8\n"
	st := parseVerifierStats("tc_ingress", log)
	want := VerifierStats{Program: "tc_ingress", Insns: 48213, StackDepth: []int{96, 0, 32, 64, 16, 0, 8}}
	if !reflect.DeepEqual(st, want) || st.MaxStack() != 96 {
		t.Fatalf("got %+v (max %d), want %+v", st, st.MaxStack(), want)
	}
	for _, bad := range []string{"", "stack depth x+1", "processed many insns", "stack depth "} {
		st := parseVerifierStats("p", bad)
		if st.Insns != 0 || len(st.StackDepth) != 0 {
			t.Errorf("%q: got %+v, want zero values", bad, st)
		}
	}
}

// The programs loaded here report their verifier statistics: the VM
// lab reads them from the daemon's log on 6.1.
func TestLoadedProgramsReportVerifierStats(t *testing.T) {
	requireRoot(t)
	d, err := Load(Config{PinPath: testPinPath(t), MaxConns: 1024, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy() })
	stats := d.VerifierStats()
	if len(stats) != 3 {
		t.Fatalf("stats %+v, want tc_ingress, tc_pass and xdp_ingress", stats)
	}
	for _, st := range stats {
		if st.Insns == 0 || len(st.StackDepth) == 0 {
			t.Errorf("%s: %+v: no verifier statistics", st.Program, st)
		}
		t.Logf("%s: %d insns, stack depth %v", st.Program, st.Insns, st.StackDepth)
	}
	if stats[0].Program != "tc_ingress" || len(stats[0].StackDepth) < 2 {
		t.Errorf("tc_ingress stack %v, want its bpf-to-bpf subprograms too", stats[0].StackDepth)
	}
}

// Any verifier log, however garbled, gives statistics without a panic,
// and a well-formed stack line reads back exactly.
func FuzzParseVerifierStats(f *testing.F) {
	f.Add("processed 10 insns (limit 1000000)\nstack depth 8+0+16\n", 3)
	f.Add("stack depth \nprocessed  insns", 0)
	f.Add("stack depth 1+2+\n", 1)
	f.Fuzz(func(t *testing.T, log string, n int) {
		st := parseVerifierStats("p", log)
		for _, d := range st.StackDepth {
			if d > st.MaxStack() {
				t.Fatalf("MaxStack %d below frame %d", st.MaxStack(), d)
			}
		}
		if n < 0 || n > 64 {
			return
		}
		var want []int
		var parts []string
		for i := 0; i < n; i++ {
			want = append(want, i*8)
			parts = append(parts, strconv.Itoa(i*8))
		}
		if n == 0 {
			return
		}
		got := parseVerifierStats("p", log+"\nstack depth "+strings.Join(parts, "+")+"\n")
		if !reflect.DeepEqual(got.StackDepth, want) {
			t.Fatalf("stack depth %v, want %v", got.StackDepth, want)
		}
	})
}
