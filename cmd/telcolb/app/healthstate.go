package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
)

// Probe verdicts are part of the persisted state: a restart must not put an
// endpoint its probe took out back into rotation before the probe has run
// again (new connections to a dead endpoint would fail meanwhile).

const (
	healthFileName = "health.json"
	healthVersion  = 1
)

// healthFile is <state dir>/health.json: the endpoints down at the last
// change, by service.
type healthFile struct {
	Version int                 `json:"version"`
	Down    map[string][]string `json:"down"`
}

func (st *store) healthPath() string { return filepath.Join(st.stateDir, healthFileName) }

// loadHealth returns the endpoints last known down. A missing file is no
// verdict; a damaged one is set aside (every endpoint then starts healthy,
// the behaviour of a first start) and reported.
func (st *store) loadHealth() (map[endpointKey]bool, *damagedFile, error) {
	raw, err := os.ReadFile(st.healthPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read probe state: %w", err)
	}
	down, perr := parseHealth(raw)
	if perr != nil {
		d, err := st.setAside(st.healthPath(), perr)
		if err != nil {
			return nil, nil, err
		}
		return nil, &d, nil
	}
	return down, nil, nil
}

func parseHealth(raw []byte) (map[endpointKey]bool, error) {
	var f healthFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("parse probe state: %w", err)
	}
	if f.Version != healthVersion {
		return nil, fmt.Errorf("probe state version %d, this daemon reads version %d", f.Version, healthVersion)
	}
	out := map[endpointKey]bool{}
	for svc, eps := range f.Down {
		for _, ep := range eps {
			ap, err := netip.ParseAddrPort(ep)
			if err != nil {
				return nil, fmt.Errorf("probe state of %q: %w", svc, err)
			}
			out[endpointKey{svc, ap}] = true
		}
	}
	return out, nil
}

// saveHealth durably replaces health.json with the endpoints down now.
func (st *store) saveHealth(down []endpointKey) error {
	f := healthFile{Version: healthVersion, Down: map[string][]string{}}
	for _, k := range down {
		f.Down[k.service] = append(f.Down[k.service], k.endpoint.String())
	}
	for _, eps := range f.Down {
		sort.Strings(eps)
	}
	raw, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode probe state: %w", err)
	}
	if err := os.MkdirAll(st.stateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	return writeFileAtomic(st.stateDir, healthFileName, append(raw, '\n'))
}

// writeFileAtomic replaces dir/name: temporary file, fsync, rename, fsync
// of the directory.
func writeFileAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	path := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return syncDir(dir)
}
