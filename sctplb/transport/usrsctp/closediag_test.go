package usrsctp

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Stack.Close's error names the endpoint usrsctp still holds and
// recognises usrsctp 0.9.5's socket reference leak only in its pattern: an
// endpoint closed without association still bound, free timers having
// fired before the wait and none during it.
func TestFinishErrorNamesHeldEndpointAndKnownLeak(t *testing.T) {
	at := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	freed := closeRecord{kind: "dial", state: "no association", port: 59929, at: at.Add(-2500 * time.Millisecond)}
	open := closeRecord{kind: "dial", state: "SHUTDOWN_SENT", port: 40000, at: at.Add(-time.Second)}
	fired := stackCounters{asocKill: 1, inpKill: 1}
	tests := []struct {
		name          string
		held          []closeRecord
		before, after stackCounters
		leak          bool
	}{
		{"leak pattern", []closeRecord{freed}, fired, fired, true},
		{"no free timer ever fired", []closeRecord{freed}, stackCounters{}, stackCounters{}, false},
		{"association free still retrying", []closeRecord{freed}, fired, stackCounters{asocKill: 5, inpKill: 1}, false},
		{"held endpoint still has its association", []closeRecord{open}, fired, fired, false},
		{"nothing still bound", nil, fired, fired, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := finishError(15*time.Second, nil, []closeRecord{open, freed}, tc.held, tc.before, tc.after, at)
			if errors.Is(err, ErrLeakedSocket) != tc.leak {
				t.Errorf("errors.Is(ErrLeakedSocket) = %v, want %v: %v", !tc.leak, tc.leak, err)
			}
			msg := err.Error()
			for _, want := range []string{"ports still bound: " + strconv.Itoa(len(tc.held)), "dial port 59929 closed in no association 2.5s before Close", "dial port 40000 closed in SHUTDOWN_SENT 1s before Close"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
		})
	}
}
