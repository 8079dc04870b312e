package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/telcolb/telcolb/api"
)

// MaxServiceID is the highest datapath service ID the daemon hands out.
const MaxServiceID = 4095

const storeFileName = "services.json"

// storeVersion guards against reading a file written by an incompatible
// daemon: better to refuse to start than to program wrong rules.
const storeVersion = 1

// storedService is one service as persisted: the defaulted spec and its
// datapath ID (IDs[0]; one rule holds every VIP of the service; stores of
// older daemons hold one ID per VIP, released at start).
type storedService struct {
	IDs     []uint32    `json:"ids"`
	Service api.Service `json:"service"`
}

type storeFile struct {
	Version  int             `json:"version"`
	Services []storedService `json:"services"`
}

// store persists the rules in one JSON file, replaced atomically so a crash
// mid-write leaves the previous version intact.
type store struct {
	path string
}

func (st *store) load() ([]storedService, error) {
	raw, err := os.ReadFile(st.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rule store: %w", err)
	}
	var f storeFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("parse rule store %s: %w", st.path, err)
	}
	if f.Version != storeVersion {
		return nil, fmt.Errorf("rule store %s: version %d, this daemon reads version %d", st.path, f.Version, storeVersion)
	}
	names := map[string]bool{}
	ids := map[uint32]string{}
	for i, s := range f.Services {
		if err := api.Validate(&s.Service); err != nil {
			return nil, fmt.Errorf("rule store %s: services[%d]: %w", st.path, i, err)
		}
		if names[s.Service.Name] {
			return nil, fmt.Errorf("rule store %s: service %q listed twice", st.path, s.Service.Name)
		}
		names[s.Service.Name] = true
		// One ID per service; older daemons stored one per VIP.
		if len(s.IDs) != 1 && len(s.IDs) != 1+len(s.Service.SecondaryVIPs) {
			return nil, fmt.Errorf("rule store %s: service %q has %d IDs for %d VIPs, want 1", st.path, s.Service.Name, len(s.IDs), 1+len(s.Service.SecondaryVIPs))
		}
		for _, id := range s.IDs {
			if id == 0 || id > MaxServiceID {
				return nil, fmt.Errorf("rule store %s: service %q: ID %d outside 1..%d", st.path, s.Service.Name, id, MaxServiceID)
			}
			if other, dup := ids[id]; dup {
				return nil, fmt.Errorf("rule store %s: ID %d used by both %q and %q", st.path, id, other, s.Service.Name)
			}
			ids[id] = s.Service.Name
		}
	}
	return f.Services, nil
}

func (st *store) save(services []storedService) error {
	sorted := append([]storedService(nil), services...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Service.Name < sorted[j].Service.Name })
	raw, err := json.MarshalIndent(storeFile{Version: storeVersion, Services: sorted}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode rule store: %w", err)
	}
	dir := filepath.Dir(st.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	tmp, err := os.CreateTemp(dir, storeFileName+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary rule store: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(append(raw, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write rule store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync rule store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close rule store: %w", err)
	}
	if err := os.Rename(tmp.Name(), st.path); err != nil {
		return fmt.Errorf("replace rule store: %w", err)
	}
	// The rename is only durable once the directory entry is on disk.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state dir: %w", err)
	}
	return nil
}
