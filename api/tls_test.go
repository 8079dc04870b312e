package api

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/telcolb/telcolb/internal/testpki"
)

// The client's CA file is read as strictly as the daemon's own: a bundle
// that is not whole certificates is refused with the reason, never loaded
// as the part that parses (a rotation's new CA cut in half would leave the
// client trusting the old CA alone and failing later for no visible reason).
func TestClientCAFileMustBeWholeCertificates(t *testing.T) {
	oldCA, newCA := testpki.NewCA(t, "old"), testpki.NewCA(t, "new")
	read := func(f string) string {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	bundle := read(oldCA.File) + read(newCA.File)
	cert, key := oldCA.IssueValid(t, "daemon.example").WriteFiles(t, t.TempDir())
	for _, tc := range []struct {
		name, content, wantErr string
	}{
		{"bundle of two", bundle, ""},
		{"second CA cut in half", bundle[:len(bundle)-len(read(newCA.File))/2], "truncated"},
		{"empty", "", "holds no PEM certificate"},
		{"text, no PEM", "not a certificate\n", "not a whole PEM certificate"},
		{"a private key", read(key), "not a CERTIFICATE"},
		{"certificate then key", read(cert) + read(key), "not a CERTIFICATE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "ca.crt")
			if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := ClientTLSConfig{CAFile: f}.TLSConfig()
			if tc.wantErr == "" {
				if err != nil || cfg.RootCAs == nil {
					t.Fatalf("whole bundle refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), f) {
				t.Fatalf("err = %v, want one naming %s and saying %q", err, f, tc.wantErr)
			}
		})
	}
}
