package diameter

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FDConfig describes a freeDiameterd instance (Debian's freediameterd
// 1.2.1) for the lab: plain TCP, no SCTP, no IPv6, the peers allowed by
// the acl_wl extension.
type FDConfig struct {
	Identity, Realm string
	// ListenOn is a non-loopback local address (freeDiameterd leaves
	// loopback out of its CER and will not start without another).
	ListenOn string
	Port     int
	// Tw is the watchdog interval in seconds (freeDiameterd's minimum is 6).
	Tw int
	// Allow lists acl_wl patterns of peers allowed to connect (e.g.
	// "*.lab.example").
	Allow []string
	// ConnectPeers lists peers freeDiameterd connects to: identity ->
	// "addr:port".
	ConnectPeers map[string]string
	// Extensions to load after the dictionaries (e.g. "rt_load_balance.fdx").
	Extensions []string
}

// WriteFD writes cert.pem, key.pem, acl.conf and fd.conf into dir and
// returns fd.conf's path. freeDiameterd insists on TLS credentials even
// when every peer uses plain TCP: a self-signed certificate does.
func WriteFD(dir string, c FDConfig) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: c.Identity},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, DNSNames: []string{c.Identity}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	files := map[string][]byte{
		"cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"key.pem":  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	}
	var acl strings.Builder
	for _, a := range c.Allow {
		fmt.Fprintf(&acl, "ALLOW_IPSEC %s\n", a)
	}
	files["acl.conf"] = []byte(acl.String())
	port, tw := c.Port, c.Tw
	if port == 0 {
		port = 3868
	}
	if tw == 0 {
		tw = 6
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "Identity = %q;\nRealm = %q;\nListenOn = %q;\nPort = %d;\nSecPort = 0;\nNo_SCTP;\nNo_IPv6;\nTwTimer = %d;\nTcTimer = 6;\n",
		c.Identity, c.Realm, c.ListenOn, port, tw)
	fmt.Fprintf(&conf, "TLS_Cred = %q, %q;\nTLS_CA = %q;\n", filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem"))
	conf.WriteString("LoadExtension = \"dict_nasreq.fdx\";\nLoadExtension = \"dict_dcca.fdx\";\n")
	fmt.Fprintf(&conf, "LoadExtension = \"acl_wl.fdx\" : %q;\n", filepath.Join(dir, "acl.conf"))
	for _, e := range c.Extensions {
		fmt.Fprintf(&conf, "LoadExtension = %q;\n", e)
	}
	for id, addr := range c.ConnectPeers {
		host, p, _ := strings.Cut(addr, ":")
		fmt.Fprintf(&conf, "ConnectPeer = %q { ConnectTo = %q; Port = %s; No_TLS; };\n", id, host, p)
	}
	files["fd.conf"] = []byte(conf.String())
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, "fd.conf"), nil
}
