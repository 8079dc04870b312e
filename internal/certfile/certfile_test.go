package certfile

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/internal/testpki"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func serialOf(t *testing.T, p testpki.Pair) string {
	t.Helper()
	c, err := tls.X509KeyPair(p.Cert, p.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.String()
}

// writeInPlace rewrites path without replacing it (same inode) and sets
// its mtime to mtime: a change only the contents tell.
func writeInPlace(t *testing.T, path string, b []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// TestServerCertReload walks a pair of files through a renewal's states:
// each step writes the files, then checks which certificate is served and
// the counters.
func TestServerCertReload(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	dir := t.TempDir()
	first, second, third := ca.IssueValid(t, "x"), ca.IssueValid(t, "x"), ca.IssueValid(t, "x")
	certFile, keyFile := first.WriteFiles(t, dir)
	r, err := NewServerCert("test certificate", certFile, keyFile, quiet())
	if err != nil {
		t.Fatal(err)
	}
	stamp := time.Now().Add(-time.Minute).Truncate(time.Second)
	steps := []struct {
		name         string
		write        func()
		want         testpki.Pair
		errs, reload uint64
	}{
		{"unchanged", func() {}, first, 0, 0},
		{"same contents written again", func() { first.WriteFiles(t, dir) }, first, 0, 0},
		{"key of another certificate", func() { testpki.Pair{Cert: second.Cert, Key: third.Key}.WriteFiles(t, dir) }, first, 1, 0},
		{"the same broken set seen again", func() {}, first, 1, 0},
		{"truncated certificate", func() { testpki.Pair{Cert: second.Cert[:len(second.Cert)/2], Key: second.Key}.WriteFiles(t, dir) }, first, 2, 0},
		{"key file missing", func() {
			if err := os.Remove(keyFile); err != nil {
				t.Fatal(err)
			}
		}, first, 3, 0},
		{"key file still missing", func() {}, first, 3, 0},
		{"renewed pair", func() { second.WriteFiles(t, dir) }, second, 3, 1},
		{"broken in place", func() {
			writeInPlace(t, certFile, third.Cert, stamp)
			writeInPlace(t, keyFile, first.Key, stamp)
		}, second, 4, 1},
		// Same inode, size and mtime as the broken set: only a read
		// tells, and a failing set is read again at every check.
		{"fixed in place, stamps unchanged", func() {
			before, _ := statFile(keyFile)
			writeInPlace(t, certFile, third.Cert, stamp)
			writeInPlace(t, keyFile, third.Key, stamp)
			if after, _ := statFile(keyFile); after != before {
				t.Fatalf("the key's stamp changed (%+v, %+v): the step tests nothing", before, after)
			}
		}, third, 4, 2},
		{"back to the served contents after a broken write", func() {
			testpki.Pair{Cert: first.Cert, Key: third.Key}.WriteFiles(t, dir)
			r.Current()
			third.WriteFiles(t, dir)
		}, third, 5, 2},
	}
	for _, s := range steps {
		s.write()
		got, err := r.GetCertificate(nil)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if g, w := got.Leaf.SerialNumber.String(), serialOf(t, s.want); g != w {
			t.Errorf("%s: serves serial %s, want %s", s.name, g, w)
		}
		if st := r.Stats(); st.Errors != s.errs || st.Reloads != s.reload {
			t.Errorf("%s: %d errors, %d reloads; want %d, %d", s.name, st.Errors, st.Reloads, s.errs, s.reload)
		}
	}
}

func TestNewRefusesBadFiles(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	dir := t.TempDir()
	good := ca.IssueValid(t, "x")
	certFile, keyFile := good.WriteFiles(t, dir)
	other := ca.IssueValid(t, "x")
	mismatched := t.TempDir()
	mc, mk := testpki.Pair{Cert: good.Cert, Key: other.Key}.WriteFiles(t, mismatched)
	for _, tc := range []struct {
		name, cert, key, want string
	}{
		{"missing certificate", filepath.Join(dir, "none"), keyFile, "no such file"},
		{"missing key", certFile, filepath.Join(dir, "none"), "no such file"},
		{"key of another certificate", mc, mk, "private key does not match public key"},
		{"key in place of the certificate", keyFile, keyFile, "certificate " + keyFile},
	} {
		_, err := NewServerCert("test certificate", tc.cert, tc.key, quiet())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := NewServerCert("test certificate", certFile, keyFile, quiet()); err != nil {
		t.Fatalf("good pair: %v", err)
	}
}

func TestCAPool(t *testing.T) {
	a, b := testpki.NewCA(t, "a"), testpki.NewCA(t, "b")
	pa, err := os.ReadFile(a.File)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := os.ReadFile(b.File)
	if err != nil {
		t.Fatal(err)
	}
	key := a.IssueValid(t, "x").Key
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name    string
		in      []byte
		certs   int
		wantErr string
	}{
		{"one CA", pa, 1, ""},
		{"old and new CA", cat(pa, pb), 2, ""},
		{"surrounding blank lines", cat([]byte("\n"), pa, []byte("\n\n"), pb, []byte("\n")), 2, ""},
		{"empty", nil, 0, "no PEM certificate"},
		{"not PEM", []byte("hello\n"), 0, "not a whole PEM certificate"},
		{"second CA truncated", cat(pa, pb[:len(pb)/2]), 0, "after certificate 1"},
		{"a key in the bundle", cat(pa, key), 0, `"EC PRIVATE KEY"`},
		{"certificate block that does not parse", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0, "certificate 1"},
	} {
		pool, certs, err := CAPool("ca.crt", tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "ca.crt") || pool != nil {
				t.Errorf("%s: %v, want an error naming ca.crt and containing %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || len(certs) != tc.certs {
			t.Errorf("%s: %d certificates, %v; want %d", tc.name, len(certs), err, tc.certs)
		}
	}
}

func FuzzCAPool(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("junk"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pool, certs, err := CAPool("f", b)
		if (err == nil) != (pool != nil) || (err == nil && len(certs) == 0) {
			t.Fatalf("pool %v, %d certs, err %v", pool, len(certs), err)
		}
	})
}
