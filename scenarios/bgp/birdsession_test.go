package bgp

import "testing"

// bird's "since" column of an unchanged session may move by a millisecond
// between two readings; a state change or a later time is a reset.
func TestSameBirdSession(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{"lb1 BGP --- up 14:06:43.902 Established", "lb1 BGP --- up 14:06:43.902 Established", true},
		{"lb1 BGP --- up 14:06:43.902 Established", "lb1 BGP --- up 14:06:43.901 Established", true},
		{"lb1 BGP --- up 14:06:43.902 Established", "lb1 BGP --- up 14:06:46.310 Established", false},
		{"lb1 BGP --- up 14:06:43.902 Established", "lb1 BGP --- start 14:06:43.902 Active", false},
		{"lb1 BGP --- up 14:06:43.902 Established", "lb1 BGP --- up 14:06:43.902 Established extra", false},
		{"lb1 BGP --- up 2026-12-03 Established", "lb1 BGP --- up 2026-12-04 Established", false},
	} {
		if got := sameBirdSession(c.a, c.b); got != c.same {
			t.Errorf("sameBirdSession(%q, %q) = %v, want %v", c.a, c.b, got, c.same)
		}
	}
}
