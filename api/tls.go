package api

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/telcolb/telcolb/internal/certfile"
)

// The daemon's API off loopback is served over TLS (the bearer token must
// not cross the network in clear text); its clients verify the daemon's
// certificate against a CA they are given, with the server name they
// expect. One certificate usually serves every daemon of a cluster (a
// Secret mounted by the DaemonSet), so the expected name is configured
// rather than taken from the URL's host, which is a node address.

// ClientTLSConfig says how a client verifies the daemon's certificate.
type ClientTLSConfig struct {
	// CAFile holds the PEM CA certificates the daemon's certificate must
	// chain to. Empty: the system roots.
	CAFile string
	// ServerName is the name the daemon's certificate must carry (a DNS
	// SAN). Empty: the host of the URL the client connects to.
	ServerName string
	// InsecureSkipVerify accepts any certificate: the connection is
	// encrypted but the daemon is not authenticated (a lab only).
	InsecureSkipVerify bool
}

// TLSConfig builds the crypto/tls configuration. An unreadable CA file or
// one that is not whole PEM certificates only (none, a truncated one, a key) is an error, never a silent fallback to the
// system roots.
func (c ClientTLSConfig) TLSConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.InsecureSkipVerify {
		if c.CAFile != "" {
			return nil, errors.New("api client: a CA file and skipping verification exclude each other")
		}
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	if c.CAFile == "" {
		return cfg, nil
	}
	raw, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("api client: CA file: %w", err)
	}
	// Strict, as the daemon's own CA files are: a truncated bundle (a
	// rotation's new CA cut in half) must not load as the old CA alone.
	pool, _, err := certfile.CAPool(c.CAFile, raw)
	if err != nil {
		return nil, fmt.Errorf("api client: %w", err)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// HTTPClient is an http.Client verifying the daemon as c says, with the
// given overall request timeout (0: none).
func (c ClientTLSConfig) HTTPClient(timeout time.Duration) (*http.Client, error) {
	tc, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &http.Client{Timeout: timeout, Transport: tr}, nil
}
