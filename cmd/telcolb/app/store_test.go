package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/telcolb/telcolb/api"
)

func svcNamed(name, vip string, secondary ...string) api.Service {
	s := webService()
	s.Name, s.VIP, s.SecondaryVIPs = name, vip, secondary
	return s
}

func writeStateFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func serviceFileJSON(t *testing.T, version int, ids []uint32, svc api.Service) string {
	t.Helper()
	b, err := json.Marshal(serviceFile{Version: version, IDs: ids, Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestStoreKeepsEachServiceAcrossReopen(t *testing.T) {
	longName := strings.Repeat("a", 253)
	tests := []struct {
		name      string
		saves     []storedService
		removes   []string
		wantNames []string
		wantFiles []string
	}{
		{
			name:      "two services",
			saves:     []storedService{{IDs: []uint32{2}, Service: svcNamed("b", "10.96.0.2")}, {IDs: []uint32{1}, Service: svcNamed("a", "10.96.0.1")}},
			wantNames: []string{"a", "b"},
			wantFiles: []string{"a.json", "b.json"},
		},
		{
			name:      "replace keeps one file with the new version",
			saves:     []storedService{{IDs: []uint32{1}, Service: svcNamed("a", "10.96.0.1")}, {IDs: []uint32{1}, Service: svcNamed("a", "10.96.0.9")}},
			wantNames: []string{"a"},
			wantFiles: []string{"a.json"},
		},
		{
			name:      "remove deletes the file",
			saves:     []storedService{{IDs: []uint32{1}, Service: svcNamed("a", "10.96.0.1")}, {IDs: []uint32{2}, Service: svcNamed("b", "10.96.0.2")}},
			removes:   []string{"a", "never-stored"},
			wantNames: []string{"b"},
			wantFiles: []string{"b.json"},
		},
		{
			name:      "name too long for a plain file name",
			saves:     []storedService{{IDs: []uint32{7}, Service: svcNamed(longName, "10.96.0.7")}},
			wantNames: []string{longName},
			wantFiles: []string{serviceFileName(longName)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := store{maxID: testMaxID, stateDir: t.TempDir()}
			for _, ss := range tt.saves {
				if err := st.save(ss); err != nil {
					t.Fatalf("save %s: %v", ss.Service.Name, err)
				}
			}
			for _, n := range tt.removes {
				if err := st.remove(n); err != nil {
					t.Fatalf("remove %s: %v", n, err)
				}
			}
			if got := dirNames(t, st.dir()); !reflect.DeepEqual(got, tt.wantFiles) {
				t.Errorf("files = %v, want %v (no temporary files)", got, tt.wantFiles)
			}
			reopened := store{maxID: testMaxID, stateDir: st.stateDir}
			got, _, _, err := reopened.load()
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, ss := range got {
				names = append(names, ss.Service.Name)
			}
			if !reflect.DeepEqual(names, tt.wantNames) {
				t.Errorf("loaded %v, want %v", names, tt.wantNames)
			}
			last := map[string]storedService{}
			for _, ss := range tt.saves {
				last[ss.Service.Name] = ss
			}
			for _, ss := range got {
				if !reflect.DeepEqual(ss, last[ss.Service.Name]) {
					t.Errorf("loaded %+v, want %+v", ss, last[ss.Service.Name])
				}
			}
		})
	}
}

func TestStoreMigratesServicesJSON(t *testing.T) {
	legacy := legacyStoreFile{Version: 1, Services: []storedService{
		{IDs: []uint32{3}, Service: svcNamed("b", "10.96.0.2")},
		{IDs: []uint32{1, 2}, Service: svcNamed("a", "10.96.0.1", "10.96.1.1")},
	}}
	raw, err := json.Marshal(legacy)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// stale is a per-service file left by an interrupted migration or
		// a later downgrade; services.json is authoritative over it.
		stale map[string]string
	}{
		{name: "fresh state dir"},
		{name: "stale per-service files", stale: map[string]string{
			"a.json":   serviceFileJSON(t, storeVersion, []uint32{9}, svcNamed("a", "10.96.0.99")),
			"old.json": serviceFileJSON(t, storeVersion, []uint32{4}, svcNamed("old", "10.96.0.4")),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := store{maxID: testMaxID, stateDir: t.TempDir()}
			writeStateFile(t, st.legacyPath(), string(raw))
			for name, content := range tt.stale {
				writeStateFile(t, filepath.Join(st.dir(), name), content)
			}
			want := []storedService{legacy.Services[1], legacy.Services[0]}
			got, _, _, err := st.load()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("first load = %+v, want %+v", got, want)
			}
			if _, err := os.Stat(st.legacyPath()); !os.IsNotExist(err) {
				t.Errorf("services.json still there after migration: %v", err)
			}
			if files := dirNames(t, st.dir()); !reflect.DeepEqual(files, []string{"a.json", "b.json"}) {
				t.Errorf("files after migration = %v", files)
			}
			again, _, _, err := st.load()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(again, want) {
				t.Errorf("load after migration = %+v, want %+v", again, want)
			}
		})
	}
}

func TestStartPersistsReleasedLegacyIDs(t *testing.T) {
	dir := t.TempDir()
	raw, err := json.Marshal(legacyStoreFile{Version: 1, Services: []storedService{
		{IDs: []uint32{1, 2}, Service: svcNamed("a", "10.96.0.1", "10.96.1.1")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	writeStateFile(t, filepath.Join(dir, legacyStoreFileName), string(raw))
	env := newEnv(t, func(c *Config) { c.StateDir = dir })
	// ID 2 is free again; the next service takes it.
	if err := env.client(t, "").ApplyService(context.Background(), svcNamed("b", "10.96.0.2")); err != nil {
		t.Fatal(err)
	}
	env.stop()
	got, _, _, err := (&store{maxID: testMaxID, stateDir: dir}).load()
	if err != nil {
		t.Fatalf("restart after reusing a released legacy ID: %v", err)
	}
	ids := map[string][]uint32{}
	for _, ss := range got {
		ids[ss.Service.Name] = ss.IDs
	}
	if want := map[string][]uint32{"a": {1}, "b": {2}}; !reflect.DeepEqual(ids, want) {
		t.Errorf("stored IDs = %v, want %v", ids, want)
	}
}

func TestStoreSetsDamagedFilesAsideAndLoadsTheRest(t *testing.T) {
	a := svcNamed("a", "10.96.0.1")
	good := map[string]string{"z.json": serviceFileJSON(t, storeVersion, []uint32{7}, svcNamed("z", "10.96.0.26"))}
	tests := []struct {
		name    string
		files   map[string]string
		badFile string
		want    string
	}{
		{"not json", map[string]string{"a.json": "{"}, "a.json", "parse rule store"},
		{"truncated", map[string]string{"a.json": serviceFileJSON(t, storeVersion, []uint32{1}, a)[:40]}, "a.json", "parse rule store"},
		{"empty", map[string]string{"a.json": ""}, "a.json", "parse rule store"},
		{"other version", map[string]string{"a.json": serviceFileJSON(t, 7, []uint32{1}, a)}, "a.json", "version 7"},
		{"invalid service", map[string]string{"a.json": `{"version":2,"ids":[1],"service":{"name":"a"}}`}, "a.json", "service:"},
		{"file named after another service", map[string]string{"b.json": serviceFileJSON(t, storeVersion, []uint32{1}, a)}, "b.json", `holds service`},
		{"id beyond the datapath", map[string]string{"a.json": serviceFileJSON(t, storeVersion, []uint32{testMaxID + 1}, a)}, "a.json", fmt.Sprintf("outside 1..%d", testMaxID)},
		{"id zero", map[string]string{"a.json": serviceFileJSON(t, storeVersion, []uint32{0}, a)}, "a.json", "outside 1.."},
		{"too many ids", map[string]string{"a.json": serviceFileJSON(t, storeVersion, []uint32{1, 2, 3}, a)}, "a.json", "want 1"},
		{"id used twice", map[string]string{
			"a.json": serviceFileJSON(t, storeVersion, []uint32{1}, a),
			"b.json": serviceFileJSON(t, storeVersion, []uint32{1}, svcNamed("b", "10.96.0.2")),
		}, "b.json", "ID 1 used by both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				writeStateFile(t, filepath.Join(dir, storeDirName, name), content)
			}
			for name, content := range good {
				writeStateFile(t, filepath.Join(dir, storeDirName, name), content)
			}
			var logs logBuffer
			dp := newFakeDatapath()
			env := startEnv(t, Config{Datapath: dp, StateDir: dir, Prober: &scriptedProber{},
				Logger: bufferLogger(&logs)})
			bad := filepath.Join(dir, storeDirName, tt.badFile)
			if _, err := os.Stat(bad); !os.IsNotExist(err) {
				t.Fatalf("%s still in the store: %v", tt.badFile, err)
			}
			if _, err := os.Stat(filepath.Join(dir, damagedDirName, tt.badFile)); err != nil {
				t.Fatalf("%s not set aside: %v", tt.badFile, err)
			}
			line := logs.String()
			if !strings.Contains(line, "moved aside") || !strings.Contains(line, bad) || !strings.Contains(line, tt.want) {
				t.Fatalf("log does not name the file and %q:\n%s", tt.want, line)
			}
			if _, err := env.client(t, "").GetService(context.Background(), "z"); err != nil {
				t.Fatalf("the good service did not load: %v", err)
			}
			if s, ok := dp.service(7); !ok || s.VIP.String() != "10.96.0.26" {
				t.Fatalf("the good service is not programmed: %+v", s)
			}
			if got := gaugeValue(t, env.reg, "telcolb_state_files_damaged"); got != 1 {
				t.Fatalf("telcolb_state_files_damaged = %v, want 1", got)
			}
		})
	}
}

func TestStoreIgnoresStrayFiles(t *testing.T) {
	dir := t.TempDir()
	svcDir := filepath.Join(dir, storeDirName)
	writeStateFile(t, filepath.Join(svcDir, "a.json"), serviceFileJSON(t, storeVersion, []uint32{1}, svcNamed("a", "10.96.0.1")))
	for _, stray := range []string{"a.json~", "a.json.bak", ".a.json.swp", "notes.txt"} {
		writeStateFile(t, filepath.Join(svcDir, stray), "garbage")
	}
	if err := os.MkdirAll(filepath.Join(svcDir, "sub.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	env := newEnv(t, func(c *Config) { c.StateDir = dir })
	if _, err := env.client(t, "").GetService(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, svcDir); !reflect.DeepEqual(got, []string{".a.json.swp", "a.json", "a.json.bak", "a.json~", "notes.txt", "sub.json"}) {
		t.Fatalf("stray files touched: %v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, damagedDirName)); !os.IsNotExist(err) {
		t.Fatalf("stray files were treated as damaged: %v", err)
	}
}

func TestStoreDropsInterruptedWrites(t *testing.T) {
	st := store{maxID: testMaxID, stateDir: t.TempDir()}
	if err := st.save(storedService{IDs: []uint32{1}, Service: svcNamed("a", "10.96.0.1")}); err != nil {
		t.Fatal(err)
	}
	// A crash between CreateTemp and rename leaves a partial temp file.
	writeStateFile(t, filepath.Join(st.dir(), tmpPrefix+"123"), `{"version":2,"ids":[1],"serv`)
	got, _, _, err := st.load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Service.Name != "a" {
		t.Errorf("loaded %+v, want service a only", got)
	}
	if files := dirNames(t, st.dir()); !reflect.DeepEqual(files, []string{"a.json"}) {
		t.Errorf("files = %v, want the temporary file removed", files)
	}
}

func TestDeleteServiceRemovesItsFile(t *testing.T) {
	dir := t.TempDir()
	env := newEnv(t, func(c *Config) { c.StateDir = dir })
	c := env.client(t, "")
	ctx := context.Background()
	for _, s := range []api.Service{svcNamed("a", "10.96.0.1"), svcNamed("b", "10.96.0.2")} {
		if err := c.ApplyService(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.DeleteService(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if files := dirNames(t, filepath.Join(dir, storeDirName)); !reflect.DeepEqual(files, []string{"b.json"}) {
		t.Errorf("files after delete = %v, want [b.json]", files)
	}
}

func TestHealthBootIDChangesPerStart(t *testing.T) {
	dir := t.TempDir()
	env := newEnv(t, func(c *Config) { c.StateDir = dir })
	ctx := context.Background()
	h1, err := env.client(t, "").Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h1again, err := env.client(t, "").Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	env.stop()
	env2 := startEnv(t, Config{Datapath: newFakeDatapath(), StateDir: dir, Prober: &scriptedProber{}, Logger: testLogger(t)})
	h2, err := env2.client(t, "").Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h1.BootID == "" || h1.BootID != h1again.BootID {
		t.Errorf("boot ID %q then %q within one run, want one non-empty ID", h1.BootID, h1again.BootID)
	}
	if h2.BootID == h1.BootID {
		t.Errorf("boot ID %q unchanged across a restart", h2.BootID)
	}
}

func FuzzParseServiceFile(f *testing.F) {
	f.Add("web.json", []byte(`{"version":2,"ids":[1],"service":`+webJSON+`}`))
	f.Add("web.json", []byte(`{"version":2,"ids":[0],"service":{}}`))
	f.Add("x", []byte(`{`))
	f.Fuzz(func(t *testing.T, fileName string, raw []byte) {
		ss, err := parseServiceFile(fileName, raw)
		if err != nil {
			return
		}
		if serviceFileName(ss.Service.Name) != fileName || len(ss.IDs) == 0 {
			t.Fatalf("accepted %+v from file %q", ss, fileName)
		}
	})
}

func FuzzParseLegacyStore(f *testing.F) {
	f.Add([]byte(`{"version":1,"services":[{"ids":[1],"service":` + webJSON + `}]}`))
	f.Add([]byte(`{"version":1,"services":[]}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		services, err := parseLegacyStore(raw, testMaxID)
		if err != nil {
			return
		}
		if err := checkStored(services, testMaxID, func(int) string { return "" }); err != nil {
			t.Fatalf("accepted a store that fails its own checks: %v", err)
		}
	})
}
