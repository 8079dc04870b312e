package bench

import (
	"strings"
	"testing"
	"time"
)

const procStat = `cpu  2255 34 2290 22625563 6290 127 456 0 0 0
cpu0 1132 34 1441 11311718 3675 127 438 0 0 0
cpu1 1123 0 849 11313845 2614 0 18 7 0 0
intr 114930548 113199788 3 0 5 263 0 4 [... 200 more]
`

// TestParseCPUBusy: a CPU's busy time is user+nice+system+irq+softirq+
// steal of its own line, in 10 ms units; idle and iowait are not busy.
func TestParseCPUBusy(t *testing.T) {
	for _, c := range []struct {
		cpu  int
		want time.Duration
	}{
		{0, (1132 + 34 + 1441 + 127 + 438) * 10 * time.Millisecond},
		{1, (1123 + 849 + 18 + 7) * 10 * time.Millisecond},
	} {
		got, err := ParseCPUBusy(procStat, c.cpu)
		if err != nil || got != c.want {
			t.Errorf("cpu%d: %v %v, want %v", c.cpu, got, err, c.want)
		}
	}
	for _, c := range []struct {
		name, stat, want string
		cpu              int
	}{
		{"no such cpu", procStat, "no cpu2 line", 2},
		{"too few counters", "cpu0 1 2 3 4\n", "fewer than 8 counters", 0},
		{"not a number", "cpu0 1 2 x 4 5 6 7 8\n", `system "x"`, 0},
		// Found by FuzzParseCPUBusy: a sum past what a Duration holds came
		// out negative.
		{"past a Duration", "cpu0 18446744073709551615 0 0 0 0 0 0 0\n", "busy ticks past", 0},
	} {
		if _, err := ParseCPUBusy(c.stat, c.cpu); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
}

func FuzzParseCPUBusy(f *testing.F) {
	f.Add(procStat, 1)
	f.Add("cpu0 1 2 3 4 5 6 7\n", 0)
	f.Fuzz(func(t *testing.T, stat string, cpu int) {
		if d, err := ParseCPUBusy(stat, cpu); err == nil && d < 0 {
			t.Fatalf("negative busy time %v", d)
		}
	})
}

// TestParseProcessCPU: utime + stime (fields 14 and 15), counted after the
// command name's last parenthesis, whatever the name holds.
func TestParseProcessCPU(t *testing.T) {
	const tail = " S 1 24331 1181 0 -1 4194560 4519 0 0 0 1234 567 0 0 20 0 9 0 2222 1000000 2000 18446744073709551615\n"
	for _, name := range []string{"(telcolb)", "(a b) c)", "()"} {
		got, err := ParseProcessCPU("24331 " + name + tail)
		if want := (1234 + 567) * 10 * time.Millisecond; err != nil || got != want {
			t.Errorf("name %s: %v %v, want %v", name, got, err, want)
		}
	}
	for _, c := range []struct{ name, stat, want string }{
		{"no name", "24331 telcolb S 1", "no command name"},
		{"too few fields", "24331 (telcolb) S 1 2 3", "fields after the command name"},
		{"not a number", "24331 (telcolb) S 1 2 3 4 5 6 7 8 9 10 x 12", `utime "x"`},
		{"past a Duration", "1 (t) S 1 2 3 4 5 6 7 8 9 10 18446744073709551615 1", "CPU ticks past"},
	} {
		if _, err := ParseProcessCPU(c.stat); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
}

func FuzzParseProcessCPU(f *testing.F) {
	f.Add("1 (telcolb) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14")
	f.Add("1 (a) b)) S 1 2 3 4 5 6 7 8 9 10 11 12")
	f.Fuzz(func(t *testing.T, stat string) {
		if d, err := ParseProcessCPU(stat); err == nil && d < 0 {
			t.Fatalf("negative CPU time %v", d)
		}
	})
}
