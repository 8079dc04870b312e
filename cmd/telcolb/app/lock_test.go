package app

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestInstanceLockIsExclusivePerStateDirAndPinPath(t *testing.T) {
	dir := t.TempDir()
	state, pins := filepath.Join(dir, "state"), filepath.Join(dir, "pins")
	first, err := LockInstance(state, pins)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ state, pins, want string }{
		{state, pins, "state dir"},
		{filepath.Join(dir, "other-state"), pins, "pin path"},
		{state, filepath.Join(dir, "other-pins"), "state dir"},
	} {
		if l, err := LockInstance(tc.state, tc.pins); err == nil || !strings.Contains(err.Error(), tc.want) {
			if l != nil {
				l.Release()
			}
			t.Fatalf("second lock on %s, %s: %v, want a refusal naming the %s", tc.state, tc.pins, err, tc.want)
		}
	}
	// The error for a busy state dir names the owner.
	if l, err := LockInstance(state, pins); err == nil || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		if l != nil {
			l.Release()
		}
		t.Fatalf("busy state dir: %v, want the owner's pid", err)
	}
	first.Release()
	again, err := LockInstance(state, pins)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again.Release()
}
