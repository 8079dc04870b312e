package sctplb

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/telcolb/telcolb/sctplb/n4"
)

// The N4 proxy's state on disk, in its own directory: snapshot.json (the
// whole n4.State, replaced atomically) and journal.jsonl (one record per
// line, each an n4.Changes, appended after every step that changed
// something, before any datagram of that step is sent). Loading folds the
// journal into the snapshot. Appends are plain writes, not fsyncs: a
// killed process loses nothing (the page cache keeps what was written); a
// host crash may lose the last changes, as it loses the process anyway.
// When the journal grows past twice the snapshot (and at least
// journalCompactMin), a new snapshot replaces both.

const (
	snapshotFile      = "snapshot.json"
	journalFile       = "journal.jsonl"
	journalCompactMin = 4 << 20
)

// n4Store keeps one proxy's state on disk.
type n4Store struct {
	dir      string
	journal  *os.File
	w        *bufio.Writer
	size     int64 // journal bytes
	snapSize int64
}

// loadN4State reads dir's snapshot and journal. A missing directory or
// snapshot is an empty state (ok false). A journal whose last line is cut
// short (the process died mid-write) loses that line only.
func loadN4State(dir string) (st n4.State, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, snapshotFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		// A journal without a snapshot is a proxy that died before its
		// first compaction: fold it into an empty state.
	case err != nil:
		return st, false, fmt.Errorf("read %s: %w", snapshotFile, err)
	default:
		if err := json.Unmarshal(b, &st); err != nil {
			return st, false, fmt.Errorf("%s: %w", snapshotFile, err)
		}
		ok = true
	}
	f, err := os.Open(filepath.Join(dir, journalFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, ok, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("open %s: %w", journalFile, err)
	}
	defer f.Close()
	bld := n4.NewBuilder(st)
	r := bufio.NewReaderSize(f, 1<<20)
	for line := 1; ; line++ {
		l, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			// A last line without its newline was cut short by a crash
			// mid-write: its step never finished, so nothing was sent
			// for it, and it is dropped.
			break
		}
		if err != nil {
			return st, false, fmt.Errorf("read %s: %w", journalFile, err)
		}
		var c n4.Changes
		if err := json.Unmarshal(l, &c); err != nil {
			return st, false, fmt.Errorf("%s line %d: %w", journalFile, line, err)
		}
		bld.Apply(c)
		ok = true
	}
	return bld.State(), ok, nil
}

// openN4Store writes st as the snapshot of dir (created 0700), empties the
// journal and opens it for appending.
func openN4Store(dir string, st n4.State) (*n4Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pfcp state dir: %w", err)
	}
	s := &n4Store{dir: dir}
	if err := s.compact(st); err != nil {
		return nil, err
	}
	return s, nil
}

// compact replaces the snapshot with st and starts an empty journal.
func (s *n4Store) compact(st n4.State) error {
	if s.journal != nil {
		if err := s.close(); err != nil {
			return err
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("pfcp state: %w", err)
	}
	tmp := filepath.Join(s.dir, snapshotFile+".tmp")
	if err := writeSync(tmp, b); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, snapshotFile)); err != nil {
		return fmt.Errorf("pfcp state: %w", err)
	}
	// The snapshot holds everything the journal did: start it afresh.
	f, err := os.OpenFile(filepath.Join(s.dir, journalFile), os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pfcp journal: %w", err)
	}
	s.journal, s.w, s.size, s.snapSize = f, bufio.NewWriterSize(f, 64<<10), 0, int64(len(b))
	return syncDir(s.dir)
}

// append writes c as one journal line. needCompact says the journal has
// outgrown the snapshot.
func (s *n4Store) append(c n4.Changes) (needCompact bool, err error) {
	b, err := json.Marshal(c)
	if err != nil {
		return false, fmt.Errorf("pfcp journal: %w", err)
	}
	b = append(b, '\n')
	if _, err := s.w.Write(b); err != nil {
		return false, fmt.Errorf("pfcp journal: %w", err)
	}
	if err := s.w.Flush(); err != nil {
		return false, fmt.Errorf("pfcp journal: %w", err)
	}
	s.size += int64(len(b))
	return s.size > max(2*s.snapSize, journalCompactMin), nil
}

func (s *n4Store) close() error {
	if s.journal == nil {
		return nil
	}
	err := s.w.Flush()
	if e := s.journal.Close(); err == nil {
		err = e
	}
	s.journal, s.w = nil, nil
	return err
}

// moveAside renames a state directory that cannot be loaded, so that the
// proxy starts afresh and the damaged files stay for a post-mortem.
func moveAside(dir string) (string, error) {
	to := fmt.Sprintf("%s.damaged-%s", dir, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(dir, to); err != nil {
		return "", err
	}
	return to, nil
}

func writeSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("pfcp state: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("pfcp state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pfcp state: %w", err)
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("pfcp state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("pfcp state: %w", err)
	}
	return nil
}
