package app

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/telcolb/telcolb/internal/certfile"
)

// TLS on the REST API. The API carries a bearer token that can create
// services and flush conntrack: off loopback it is served over TLS, and a
// plain-HTTP listener on another address is refused unless
// --api-allow-insecure-http says so explicitly (a lab on an isolated
// network). The certificate is re-read when its files change, so a
// rotation (cert-manager renewing the Secret the DaemonSet mounts) needs no
// restart.

// checkAPITLS checks the API's TLS settings against its address. Errors
// name the flag.
func (o *Options) checkAPITLS() error {
	if (o.APITLSCertFile == "") != (o.APITLSKeyFile == "") {
		return errors.New("api-tls-cert-file and api-tls-key-file go together: set both or neither")
	}
	if o.APITLSCertFile != "" || o.APIAllowInsecureHTTP {
		return nil
	}
	host, _, err := net.SplitHostPort(o.APIAddress)
	if err != nil {
		return fmt.Errorf("api-address %q: %w", o.APIAddress, err)
	}
	if !isLoopbackHost(host) {
		return fmt.Errorf("api-address %q is not a loopback address: serve the API over TLS (api-tls-cert-file, api-tls-key-file) or set api-allow-insecure-http to send the bearer token in clear text", o.APIAddress)
	}
	return nil
}

// isLoopbackHost: a literal loopback address or "localhost". An empty host
// (":8091") listens on every address, so it is not loopback.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// APITLSConfig is the server TLS configuration of the options, nil when
// the API is served in plain HTTP.
func (o *Options) APITLSConfig(log *slog.Logger) (*tls.Config, error) {
	if o.APITLSCertFile == "" {
		return nil, nil
	}
	// Re-read when the files change (internal/certfile).
	r, err := certfile.NewServerCert("API certificate", o.APITLSCertFile, o.APITLSKeyFile, log)
	if err != nil {
		return nil, fmt.Errorf("api-tls-cert-file / api-tls-key-file: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}, nil
}
