package app

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/telcolb/telcolb/api"
)

const (
	// legacyStoreFileName is the single-file store of older daemons, read
	// once and migrated to storeDirName.
	legacyStoreFileName = "services.json"
	// storeDirName holds one file per service so a write costs the same
	// whatever the number of services (the single file made a cold start of
	// N services cost O(N^2) bytes written and synced).
	storeDirName = "services"
	// tmpPrefix starts with '.', which a service name cannot, so a leftover
	// temporary file never collides with a service's file.
	tmpPrefix = ".tmp-"
	// hashedNameSep marks a file name derived from a hash; '~' is not
	// allowed in service names, so such names cannot collide with the plain
	// "<name>.json" form.
	hashedNameSep = "~"
	// maxFileNameLen is NAME_MAX of the usual Linux file systems.
	maxFileNameLen = 255
	// damagedDirName holds service files that could not be loaded, moved
	// out of services/ so that one bad file does not stop the daemon.
	damagedDirName = "damaged"
)

// Store versions guard against reading a file written by an incompatible
// daemon: better to refuse to start than to program wrong rules.
const (
	legacyStoreVersion = 1
	storeVersion       = 2
)

// storedService is one service as persisted: the defaulted spec and its
// datapath ID (IDs[0]; one rule holds every VIP of the service; stores of
// older daemons hold one ID per VIP, released at start).
type storedService struct {
	IDs     []uint32    `json:"ids"`
	Service api.Service `json:"service"`
}

// legacyStoreFile is the format of services.json (version 1).
type legacyStoreFile struct {
	Version  int             `json:"version"`
	Services []storedService `json:"services"`
}

// serviceFile is the format of services/<name>.json.
type serviceFile struct {
	Version int         `json:"version"`
	IDs     []uint32    `json:"ids"`
	Service api.Service `json:"service"`
}

// store persists each service in its own file under <state dir>/services,
// replaced atomically (temp file, fsync, rename, fsync dir) so a crash
// mid-write leaves the previous version of that service intact.
type store struct {
	stateDir string
	// maxID is the highest service ID the datapath accepts.
	maxID uint32
}

// damagedFile is a service file set aside at load.
type damagedFile struct {
	path, movedTo, reason string
}

func (st *store) dir() string        { return filepath.Join(st.stateDir, storeDirName) }
func (st *store) legacyPath() string { return filepath.Join(st.stateDir, legacyStoreFileName) }

// serviceFileName maps a service name to its file name. Names up to 250
// characters are used as they are; longer ones (names may have 253) would
// exceed NAME_MAX with the extension, so they are shortened with a hash.
func serviceFileName(name string) string {
	const ext = ".json"
	if len(name)+len(ext) <= maxFileNameLen {
		return name + ext
	}
	sum := sha256.Sum256([]byte(name))
	return name[:200] + hashedNameSep + hex.EncodeToString(sum[:16]) + ext
}

// load returns every stored service sorted by name. A services.json of an
// older daemon is migrated to per-service files first and then removed.
// A service file that cannot be used (unreadable, not JSON, another
// version, invalid, misnamed, an ID out of range or already taken) is moved
// to <state dir>/damaged and reported in damaged; the others load. Files
// that are not service files (an editor's "~" or ".bak" copy, a
// subdirectory) are left alone and listed in ignored.
func (st *store) load() (services []storedService, damaged []damagedFile, ignored []string, err error) {
	legacy, err := st.loadLegacy()
	if err != nil {
		return nil, nil, nil, err
	}
	if legacy != nil {
		if err := st.migrate(legacy); err != nil {
			return nil, nil, nil, err
		}
		return sortByName(legacy), nil, nil, nil
	}
	entries, err := os.ReadDir(st.dir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read rule store %s: %w", st.dir(), err)
	}
	names := map[string]bool{}
	ids := map[uint32]string{}
	for _, e := range entries {
		path := filepath.Join(st.dir(), e.Name())
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			// A write interrupted before its rename: the service's
			// previous file (if any) is still the valid version.
			if err := os.Remove(path); err != nil {
				return nil, nil, nil, fmt.Errorf("remove interrupted rule store write %s: %w", path, err)
			}
			continue
		}
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			ignored = append(ignored, path)
			continue
		}
		ss, perr := st.readServiceFile(path, e.Name())
		if perr == nil {
			perr = claim(ss, names, ids)
		}
		if perr != nil {
			d, err := st.setAside(path, perr)
			if err != nil {
				return nil, nil, nil, err
			}
			damaged = append(damaged, d)
			continue
		}
		services = append(services, ss)
	}
	return sortByName(services), damaged, ignored, nil
}

func (st *store) readServiceFile(path, name string) (storedService, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return storedService{}, fmt.Errorf("read: %w", err)
	}
	ss, err := parseServiceFile(name, raw)
	if err != nil {
		return storedService{}, err
	}
	if err := checkStored([]storedService{ss}, st.maxID, func(int) string { return name }); err != nil {
		return storedService{}, err
	}
	return ss, nil
}

// claim records a loaded service's name and IDs, refusing one that repeats
// what an earlier file claimed (the earlier file keeps it: nothing is
// reassigned).
func claim(ss storedService, names map[string]bool, ids map[uint32]string) error {
	if names[ss.Service.Name] {
		return fmt.Errorf("service %q listed twice", ss.Service.Name)
	}
	for _, id := range ss.IDs {
		if other, dup := ids[id]; dup {
			return fmt.Errorf("ID %d used by both %q and %q", id, other, ss.Service.Name)
		}
	}
	names[ss.Service.Name] = true
	for _, id := range ss.IDs {
		ids[id] = ss.Service.Name
	}
	return nil
}

// setAside moves a damaged service file to <state dir>/damaged, under a
// name that never overwrites an earlier one.
func (st *store) setAside(path string, reason error) (damagedFile, error) {
	dir := filepath.Join(st.stateDir, damagedDirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return damagedFile{}, fmt.Errorf("rule store: create %s: %w", dir, err)
	}
	base := filepath.Base(path)
	to := filepath.Join(dir, base)
	for i := 1; ; i++ {
		if _, err := os.Lstat(to); errors.Is(err, os.ErrNotExist) {
			break
		}
		to = filepath.Join(dir, fmt.Sprintf("%s.%d", base, i))
	}
	if err := os.Rename(path, to); err != nil {
		return damagedFile{}, fmt.Errorf("rule store: set damaged %s aside: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return damagedFile{}, err
	}
	return damagedFile{path: path, movedTo: to, reason: reason.Error()}, nil
}

// loadLegacy reads services.json; nil without error when there is none.
func (st *store) loadLegacy() ([]storedService, error) {
	path := st.legacyPath()
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rule store: %w", err)
	}
	services, err := parseLegacyStore(raw, st.maxID)
	if err != nil {
		return nil, fmt.Errorf("rule store %s: %w", path, err)
	}
	if services == nil {
		services = []storedService{}
	}
	return services, nil
}

// migrate writes every service of services.json to its own file, deletes
// per-service files it does not list, then removes services.json. Until
// that last step services.json stays authoritative, so a crash anywhere in
// between just repeats the migration at the next start.
func (st *store) migrate(services []storedService) error {
	keep := map[string]bool{}
	for _, ss := range services {
		name, err := st.write(ss, false)
		if err != nil {
			return fmt.Errorf("migrate rule store: %w", err)
		}
		keep[name] = true
	}
	entries, err := os.ReadDir(st.dir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("migrate rule store: %w", err)
	}
	for _, e := range entries {
		if keep[e.Name()] {
			continue
		}
		if err := os.Remove(filepath.Join(st.dir(), e.Name())); err != nil {
			return fmt.Errorf("migrate rule store: remove stale file: %w", err)
		}
	}
	if err := os.MkdirAll(st.dir(), 0o700); err != nil {
		return fmt.Errorf("migrate rule store: create %s: %w", st.dir(), err)
	}
	if err := syncDir(st.dir()); err != nil {
		return fmt.Errorf("migrate rule store: %w", err)
	}
	if err := os.Remove(st.legacyPath()); err != nil {
		return fmt.Errorf("migrate rule store: remove %s: %w", st.legacyPath(), err)
	}
	if err := syncDir(st.stateDir); err != nil {
		return fmt.Errorf("migrate rule store: %w", err)
	}
	return nil
}

// save durably writes one service, replacing its previous version.
func (st *store) save(ss storedService) error {
	_, err := st.write(ss, true)
	return err
}

// remove durably deletes the file of one service; a missing file is fine.
func (st *store) remove(name string) error {
	path := filepath.Join(st.dir(), serviceFileName(name))
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove rule store %s: %w", path, err)
	}
	if err := syncDir(st.dir()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// write replaces the file of ss atomically and returns its file name. The
// directory is synced only when syncParent is set; migrate syncs it once
// after writing all files.
func (st *store) write(ss storedService, syncParent bool) (string, error) {
	raw, err := json.MarshalIndent(serviceFile{Version: storeVersion, IDs: ss.IDs, Service: ss.Service}, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode rule store entry %s: %w", ss.Service.Name, err)
	}
	dir := st.dir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create rule store dir: %w", err)
	}
	name := serviceFileName(ss.Service.Name)
	tmp, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return "", fmt.Errorf("create temporary rule store file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(append(raw, '\n')); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write rule store %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("sync rule store %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("close rule store %s: %w", tmp.Name(), err)
	}
	path := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("replace rule store %s: %w", path, err)
	}
	if syncParent {
		if err := syncDir(dir); err != nil {
			return "", err
		}
	}
	return name, nil
}

// syncDir makes renames and removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state dir %s: %w", dir, err)
	}
	return nil
}

// parseLegacyStore parses and validates a services.json (version 1).
func parseLegacyStore(raw []byte, maxID uint32) ([]storedService, error) {
	var f legacyStoreFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("parse rule store: %w", err)
	}
	if f.Version != legacyStoreVersion {
		return nil, fmt.Errorf("version %d, this daemon reads version %d", f.Version, legacyStoreVersion)
	}
	for i := range f.Services {
		if err := api.Validate(&f.Services[i].Service); err != nil {
			return nil, fmt.Errorf("services[%d]: %w", i, err)
		}
	}
	if err := checkStored(f.Services, maxID, func(int) string { return "services.json" }); err != nil {
		return nil, err
	}
	return f.Services, nil
}

// parseServiceFile parses and validates one services/<name>.json; fileName
// must be the name the service's own name maps to, so a renamed or copied
// file cannot shadow another service.
func parseServiceFile(fileName string, raw []byte) (storedService, error) {
	var f serviceFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return storedService{}, fmt.Errorf("parse rule store: %w", err)
	}
	if f.Version != storeVersion {
		return storedService{}, fmt.Errorf("version %d, this daemon reads version %d", f.Version, storeVersion)
	}
	if err := api.Validate(&f.Service); err != nil {
		return storedService{}, fmt.Errorf("service: %w", err)
	}
	if want := serviceFileName(f.Service.Name); fileName != want {
		return storedService{}, fmt.Errorf("holds service %q, whose file is %s", f.Service.Name, want)
	}
	ss := storedService{IDs: f.IDs, Service: f.Service}
	if err := checkStored([]storedService{ss}, ^uint32(0), func(int) string { return fileName }); err != nil {
		return storedService{}, err
	}
	return ss, nil
}

// checkStored enforces what the ID allocator relies on: names unique, IDs
// in 1..maxID and used once. where names the source of services[i] in
// errors.
func checkStored(services []storedService, maxID uint32, where func(i int) string) error {
	names := map[string]bool{}
	ids := map[uint32]string{}
	for i, s := range services {
		if names[s.Service.Name] {
			return fmt.Errorf("%s: service %q listed twice", where(i), s.Service.Name)
		}
		names[s.Service.Name] = true
		// One ID per service; older daemons stored one per VIP.
		if len(s.IDs) != 1 && len(s.IDs) != 1+len(s.Service.SecondaryVIPs) {
			return fmt.Errorf("%s: service %q has %d IDs for %d VIPs, want 1", where(i), s.Service.Name, len(s.IDs), 1+len(s.Service.SecondaryVIPs))
		}
		for _, id := range s.IDs {
			if id == 0 || id > maxID {
				return fmt.Errorf("%s: service %q: ID %d outside 1..%d", where(i), s.Service.Name, id, maxID)
			}
			if other, dup := ids[id]; dup {
				return fmt.Errorf("%s: ID %d used by both %q and %q", where(i), id, other, s.Service.Name)
			}
			ids[id] = s.Service.Name
		}
	}
	return nil
}

func sortByName(services []storedService) []storedService {
	sort.Slice(services, func(i, j int) bool { return services[i].Service.Name < services[j].Service.Name })
	return services
}
