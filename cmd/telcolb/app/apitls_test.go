package app

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/internal/testpki"
)

const apiServerName = "telcolb-daemon.telcolb-system.svc"

func TestAPITLSOptions(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"default loopback plain", nil, ""},
		{"ipv6 loopback plain", []string{"--api-address=[::1]:8091"}, ""},
		{"localhost plain", []string{"--api-address=localhost:8091"}, ""},
		{"node address plain", []string{"--api-address=10.0.0.1:8091"}, "api-allow-insecure-http"},
		{"every address plain", []string{"--api-address=:8091"}, "api-allow-insecure-http"},
		{"node address plain, allowed", []string{"--api-address=10.0.0.1:8091", "--api-allow-insecure-http"}, ""},
		{"node address tls", []string{"--api-address=10.0.0.1:8091", "--api-tls-cert-file=" + dir + "/c", "--api-tls-key-file=" + dir + "/k"}, ""},
		{"cert without key", []string{"--api-tls-cert-file=" + dir + "/c"}, "api-tls-key-file"},
		{"key without cert", []string{"--api-tls-key-file=" + dir + "/k"}, "api-tls-cert-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseOptions(tt.args, io.Discard)
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("ParseOptions(%q) = %v, want error containing %q", tt.args, err, tt.wantErr)
			}
		})
	}
	cfg := writeFile(t, "telcolb.yaml", "apiAddress: 10.0.0.1:9000\napiTLSCertFile: /etc/c\napiTLSKeyFile: /etc/k\n")
	o, err := ParseOptions([]string{"--config", cfg}, io.Discard)
	if err != nil || o.APITLSCertFile != "/etc/c" || o.APITLSKeyFile != "/etc/k" {
		t.Fatalf("config file: %+v, %v", o, err)
	}
	if _, err := (&Options{APITLSCertFile: dir + "/none", APITLSKeyFile: dir + "/none"}).APITLSConfig(testLogger(t)); err == nil {
		t.Fatal("APITLSConfig accepted missing files")
	}
}

// serveAPITLS serves a real API server on loopback over TLS as the daemon
// does (tls.NewListener with Options.APITLSConfig).
func serveAPITLS(t *testing.T, certFile, keyFile string) string {
	t.Helper()
	e := newEnv(t, nil)
	o := Options{APITLSCertFile: certFile, APITLSKeyFile: keyFile}
	tc, err := o.APITLSConfig(testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: e.srv, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = hs.Serve(tls.NewListener(ln, tc)) }()
	t.Cleanup(func() { _ = hs.Close() })
	return "https://" + ln.Addr().String()
}

// healthOver asks /v1/health with a fresh client (a new connection, so a
// new handshake) verifying the daemon as c says.
func healthOver(t *testing.T, url string, c api.ClientTLSConfig) error {
	t.Helper()
	hc, err := c.HTTPClient(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	cl, err := api.NewClient(api.ClientConfig{BaseURL: url, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.Health(context.Background())
	return err
}

func isUnknownAuthority(err error) bool {
	return err != nil && strings.Contains(err.Error(), "certificate signed by unknown authority")
}

func TestAPITLSVerifiedByClient(t *testing.T) {
	ca, other := testpki.NewCA(t, "api"), testpki.NewCA(t, "other")
	certFile, keyFile := ca.IssueValid(t, apiServerName).WriteFiles(t, t.TempDir())
	url := serveAPITLS(t, certFile, keyFile)

	if err := healthOver(t, url, api.ClientTLSConfig{CAFile: ca.File, ServerName: apiServerName}); err != nil {
		t.Fatalf("right CA and name refused: %v", err)
	}
	if err := healthOver(t, url, api.ClientTLSConfig{CAFile: other.File, ServerName: apiServerName}); !isUnknownAuthority(err) {
		t.Errorf("wrong CA: %v, want unknown authority", err)
	}
	if err := healthOver(t, url, api.ClientTLSConfig{CAFile: ca.File, ServerName: "someone-else.example"}); err == nil || !strings.Contains(err.Error(), "someone-else.example") {
		t.Errorf("wrong server name: %v, want a name mismatch", err)
	}
	if err := healthOver(t, url, api.ClientTLSConfig{InsecureSkipVerify: true}); err != nil {
		t.Errorf("insecure-skip-verify: %v", err)
	}
	// Plain HTTP to the TLS port gets no API answer.
	plain, err := api.NewClient(api.ClientConfig{BaseURL: strings.Replace(url, "https", "http", 1)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Health(context.Background()); err == nil {
		t.Error("plain HTTP to the TLS API answered")
	}
	if _, err := (api.ClientTLSConfig{CAFile: certFile + ".missing"}).TLSConfig(); err == nil {
		t.Error("missing CA file accepted")
	}
	if _, err := (api.ClientTLSConfig{CAFile: keyFile}).TLSConfig(); err == nil || !strings.Contains(err.Error(), "not a CERTIFICATE") {
		t.Errorf("CA file without certificate: %v", err)
	}
}

func TestAPITLSExpiredRefused(t *testing.T) {
	ca := testpki.NewCA(t, "api")
	expired := ca.Issue(t, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour), apiServerName)
	certFile, keyFile := expired.WriteFiles(t, t.TempDir())
	url := serveAPITLS(t, certFile, keyFile)
	err := healthOver(t, url, api.ClientTLSConfig{CAFile: ca.File, ServerName: apiServerName})
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired certificate: %v, want refused as expired", err)
	}
}

// TestAPITLSRotation: a renewed pair written over the files (as a Secret
// volume update does) is served from the next handshake, without restart;
// a broken pair is not, and the previous one keeps serving.
func TestAPITLSRotation(t *testing.T) {
	old, renewed := testpki.NewCA(t, "old"), testpki.NewCA(t, "renewed")
	dir := t.TempDir()
	certFile, keyFile := old.IssueValid(t, apiServerName).WriteFiles(t, dir)
	url := serveAPITLS(t, certFile, keyFile)
	byOld := api.ClientTLSConfig{CAFile: old.File, ServerName: apiServerName}
	byRenewed := api.ClientTLSConfig{CAFile: renewed.File, ServerName: apiServerName}
	if err := healthOver(t, url, byOld); err != nil {
		t.Fatalf("before rotation: %v", err)
	}

	// Half-written update: a certificate that does not match the key.
	broken := renewed.IssueValid(t, apiServerName)
	broken.Key = old.IssueValid(t, apiServerName).Key
	broken.WriteFiles(t, dir)
	if err := healthOver(t, url, byOld); err != nil {
		t.Fatalf("a broken pair replaced the served one: %v", err)
	}

	renewed.IssueValid(t, apiServerName).WriteFiles(t, dir)
	if err := healthOver(t, url, byRenewed); err != nil {
		t.Fatalf("rotation not picked up: %v", err)
	}
	if err := healthOver(t, url, byOld); !isUnknownAuthority(err) {
		t.Errorf("old certificate still served after rotation: %v", err)
	}
}
