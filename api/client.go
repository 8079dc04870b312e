package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// BaseURL is the daemon's address, e.g. "http://127.0.0.1:8091".
	BaseURL string
	// Token, when set, is sent as "Authorization: Bearer <Token>".
	Token string
	// HTTPClient defaults to a client with a 30s timeout.
	HTTPClient *http.Client
}

// Client talks to the telcolb daemon's REST API.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// DefaultTokenFile is where the daemon keeps its API token by default
// (<state dir>/api-token, mode 0600): telcolbctl on the node reads it.
const DefaultTokenFile = "/var/lib/telcolb/api-token"

// maxResponseBody bounds what the client reads from the daemon, so a broken
// or hostile server cannot make it allocate without limit.
const maxResponseBody = 64 << 20

// NewClient checks the configuration and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("api client: BaseURL is required")
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("api client: parse BaseURL %q: %w", cfg.BaseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("api client: BaseURL %q: scheme must be http or https", cfg.BaseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("api client: BaseURL %q has no host", cfg.BaseURL)
	}
	if strings.ContainsAny(cfg.Token, "\r\n") {
		return nil, errors.New("api client: token contains a line break")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: u, token: cfg.Token, hc: hc}, nil
}

// ApplyService creates or replaces a service (PUT, idempotent).
func (c *Client) ApplyService(ctx context.Context, s Service) error {
	if s.Name == "" {
		return &FieldError{Field: "name", Message: "required"}
	}
	return c.do(ctx, http.MethodPut, servicePath(s.Name), s, nil)
}

// CreateService creates a service and fails with a 409 StatusError if the
// name exists.
func (c *Client) CreateService(ctx context.Context, s Service) error {
	return c.do(ctx, http.MethodPost, "/"+Version+"/services", s, nil)
}

// GetService returns one service with its live state.
func (c *Client) GetService(ctx context.Context, name string) (ServiceStatus, error) {
	var st ServiceStatus
	err := c.do(ctx, http.MethodGet, servicePath(name), nil, &st)
	return st, err
}

// ListServices returns every service, sorted by name.
func (c *Client) ListServices(ctx context.Context) ([]ServiceStatus, error) {
	var list []ServiceStatus
	err := c.do(ctx, http.MethodGet, "/"+Version+"/services", nil, &list)
	return list, err
}

// DeleteService deletes a service; a missing one gives an error for which
// IsNotFound is true.
func (c *Client) DeleteService(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, servicePath(name), nil, nil)
}

// Conntrack returns the datapath's connections.
func (c *Client) Conntrack(ctx context.Context) ([]Conn, error) {
	var conns []Conn
	err := c.do(ctx, http.MethodGet, "/"+Version+"/conntrack", nil, &conns)
	return conns, err
}

// FlushConntrack removes every connection from the datapath.
func (c *Client) FlushConntrack(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "/"+Version+"/conntrack", nil, nil)
}

// Health returns the daemon's health summary.
//
// A node that is not ready (status "syncing": its HA bulk resync is
// pending) answers 503 with the same body: Health returns it without an
// error, since the daemon is up and serves its API (the controller programs
// it meanwhile); h.Status says whether it is ready.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.doAccepting(ctx, http.MethodGet, "/"+Version+"/health", nil, &h, http.StatusServiceUnavailable)
	if err == nil && h.Status == "" {
		// A 503 that is no daemon's Health (a proxy in between, say).
		return h, fmt.Errorf("GET /%s/health: %w", Version, &StatusError{Code: http.StatusServiceUnavailable, Body: Error{Message: "answer without a health status"}})
	}
	return h, err
}

func servicePath(name string) string {
	return "/" + Version + "/services/" + url.PathEscape(name)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return c.doAccepting(ctx, method, path, in, out, 0)
}

// doAccepting is do where the status code accept (when not 0) also carries
// a body to decode into out, as 2xx do.
func (c *Client) doAccepting(ctx context.Context, method, path string, in, out any, accept int) error {
	// path is already escaped (servicePath), so it is appended as text.
	target := strings.TrimSuffix(c.base.String(), "/") + path
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if (resp.StatusCode < 200 || resp.StatusCode > 299) && (accept == 0 || resp.StatusCode != accept) {
		se := &StatusError{Code: resp.StatusCode}
		if json.Unmarshal(raw, &se.Body) != nil || se.Body.Message == "" {
			se.Body = Error{Message: strings.TrimSpace(string(raw))}
		}
		return fmt.Errorf("%s %s: %w", method, path, se)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

// PutAdvertisement replaces the node's advertisement configuration.
func (c *Client) PutAdvertisement(ctx context.Context, cfg AdvertisementConfig) error {
	return c.do(ctx, http.MethodPut, "/"+Version+"/advertisement", cfg, nil)
}

// Advertisement returns the node's advertisement configuration and BGP/BFD states.
func (c *Client) Advertisement(ctx context.Context) (AdvertisementStatus, error) {
	var out AdvertisementStatus
	err := c.do(ctx, http.MethodGet, "/"+Version+"/advertisement", nil, &out)
	return out, err
}

// VIPs lists the VIPs the node serves and how each is announced.
func (c *Client) VIPs(ctx context.Context) ([]VIPStatus, error) {
	var out []VIPStatus
	err := c.do(ctx, http.MethodGet, "/"+Version+"/vips", nil, &out)
	return out, err
}

// HA returns the node's HA sync state.
func (c *Client) HA(ctx context.Context) (HAStatus, error) {
	var out HAStatus
	err := c.do(ctx, http.MethodGet, "/"+Version+"/ha", nil, &out)
	return out, err
}
