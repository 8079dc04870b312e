package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockFileName is the instance lock inside the state dir; it holds the pid
// of the daemon that owns it (for the error a second instance prints).
const lockFileName = ".lock"

// InstanceLock is held by the one daemon that owns a state dir and a pin
// path. A second daemon on either must refuse before it touches the
// datapath: reloading and reattaching it would reset live connections and
// leave the first daemon writing to maps no program reads.
type InstanceLock struct {
	files []*os.File
}

// LockInstance takes exclusive, non-blocking flocks on <stateDir>/.lock and
// on the pin path directory (created if missing). The kernel drops them when
// the process dies, so a crashed daemon never blocks its successor.
func LockInstance(stateDir, pinPath string) (*InstanceLock, error) {
	l := &InstanceLock{}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	lockPath := filepath.Join(stateDir, lockFileName)
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open instance lock: %w", err)
	}
	if err := flock(f); err != nil {
		owner := readOwner(f)
		f.Close()
		return nil, fmt.Errorf("state dir %s is in use by another telcolb%s: %w", stateDir, owner, err)
	}
	l.files = append(l.files, f)
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err := os.MkdirAll(pinPath, 0o755); err != nil {
		l.Release()
		return nil, fmt.Errorf("create pin path %s: %w", pinPath, err)
	}
	d, err := os.OpenFile(pinPath, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		l.Release()
		return nil, fmt.Errorf("open pin path %s: %w", pinPath, err)
	}
	if err := flock(d); err != nil {
		d.Close()
		l.Release()
		return nil, fmt.Errorf("pin path %s is in use by another telcolb: %w", pinPath, err)
	}
	l.files = append(l.files, d)
	return l, nil
}

var errLocked = errors.New("locked")

func flock(f *os.File) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return errLocked
	}
	if err != nil {
		return fmt.Errorf("flock %s: %w", f.Name(), err)
	}
	return nil
}

func readOwner(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	if pid := strings.TrimSpace(string(b[:n])); pid != "" {
		return " (pid " + pid + ")"
	}
	return ""
}

// Release drops the locks.
func (l *InstanceLock) Release() {
	for _, f := range l.files {
		f.Close()
	}
	l.files = nil
}
