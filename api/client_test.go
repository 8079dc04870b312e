package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestNewClientRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  ClientConfig
		want string
	}{
		{"no url", ClientConfig{}, "BaseURL is required"},
		{"bad scheme", ClientConfig{BaseURL: "ftp://x"}, "scheme"},
		{"no host", ClientConfig{BaseURL: "http://"}, "no host"},
		{"unparsable", ClientConfig{BaseURL: "http://[::1"}, "parse BaseURL"},
		{"token with newline", ClientConfig{BaseURL: "http://x", Token: "a\nb"}, "line break"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClient(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewClient = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// recorder answers every request with a canned reply and remembers the request.
type recorder struct {
	method, path, auth, ctype string
	body                      []byte
	code                      int
	reply                     string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.method, r.path = req.Method, req.URL.Path
	r.auth, r.ctype = req.Header.Get("Authorization"), req.Header.Get("Content-Type")
	r.body, _ = io.ReadAll(req.Body)
	w.WriteHeader(r.code)
	_, _ = io.WriteString(w, r.reply)
}

func TestClientSendsRequestsAndDecodesAnswers(t *testing.T) {
	svc := Service{Name: "web", VIP: "10.0.0.1", Port: 80, Protocol: "tcp", Endpoints: []Endpoint{{Address: "10.0.0.2", Port: 80}}}
	statusJSON, _ := json.Marshal(ServiceStatus{Service: svc, Packets: 7})
	tests := []struct {
		name       string
		call       func(*Client) (any, error)
		code       int
		reply      string
		wantMethod string
		wantPath   string
		wantBody   bool
		check      func(t *testing.T, got any)
	}{
		{"apply", func(c *Client) (any, error) { return nil, c.ApplyService(context.Background(), svc) },
			200, string(statusJSON), "PUT", "/v1/services/web", true, nil},
		{"create", func(c *Client) (any, error) { return nil, c.CreateService(context.Background(), svc) },
			201, string(statusJSON), "POST", "/v1/services", true, nil},
		{"get", func(c *Client) (any, error) { return c.GetService(context.Background(), "web") },
			200, string(statusJSON), "GET", "/v1/services/web", false, func(t *testing.T, got any) {
				if st := got.(ServiceStatus); st.Packets != 7 || st.Service.Name != "web" {
					t.Errorf("status = %+v", st)
				}
			}},
		{"list", func(c *Client) (any, error) { return c.ListServices(context.Background()) },
			200, "[" + string(statusJSON) + "]", "GET", "/v1/services", false, func(t *testing.T, got any) {
				if l := got.([]ServiceStatus); len(l) != 1 {
					t.Errorf("list = %+v", l)
				}
			}},
		{"delete", func(c *Client) (any, error) { return nil, c.DeleteService(context.Background(), "web") },
			204, "", "DELETE", "/v1/services/web", false, nil},
		{"conntrack", func(c *Client) (any, error) { return c.Conntrack(context.Background()) },
			200, `[{"protocol":"tcp","service":"web"}]`, "GET", "/v1/conntrack", false, func(t *testing.T, got any) {
				if l := got.([]Conn); len(l) != 1 || l[0].Service != "web" {
					t.Errorf("conns = %+v", l)
				}
			}},
		{"flush", func(c *Client) (any, error) { return nil, c.FlushConntrack(context.Background()) },
			204, "", "DELETE", "/v1/conntrack", false, nil},
		{"health", func(c *Client) (any, error) { return c.Health(context.Background()) },
			200, `{"status":"ok","attachMode":"tcx"}`, "GET", "/v1/health", false, func(t *testing.T, got any) {
				if h := got.(Health); h.Status != "ok" || h.AttachMode != "tcx" {
					t.Errorf("health = %+v", h)
				}
			}},
		// A node waiting for its HA resync answers 503 with its Health.
		{"health syncing", func(c *Client) (any, error) { return c.Health(context.Background()) },
			503, `{"status":"syncing","notReady":"ha resync pending from lb1","attachMode":"tcx"}`, "GET", "/v1/health", false, func(t *testing.T, got any) {
				if h := got.(Health); h.Status != "syncing" || h.NotReady != "ha resync pending from lb1" {
					t.Errorf("health = %+v", h)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{code: tt.code, reply: tt.reply}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			c, err := NewClient(ClientConfig{BaseURL: srv.URL + "/", Token: "s3cret"})
			if err != nil {
				t.Fatal(err)
			}
			got, err := tt.call(c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if rec.method != tt.wantMethod || rec.path != tt.wantPath {
				t.Errorf("request = %s %s, want %s %s", rec.method, rec.path, tt.wantMethod, tt.wantPath)
			}
			if rec.auth != "Bearer s3cret" {
				t.Errorf("Authorization = %q", rec.auth)
			}
			if tt.wantBody {
				var sent Service
				if err := json.Unmarshal(rec.body, &sent); err != nil || sent.Name != "web" || rec.ctype != "application/json" {
					t.Errorf("body %q (content-type %q): %v", rec.body, rec.ctype, err)
				}
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

func TestClientErrorsCarryTheServerErrorBody(t *testing.T) {
	tests := []struct {
		name         string
		code         int
		reply        string
		wantField    string
		wantMessage  string
		wantNotFound bool
		wantConflict bool
	}{
		{"not found", 404, `{"message":"service \"web\" not found"}`, "", `service "web" not found`, true, false},
		{"field error", 400, `{"field":"endpoints[2].address","message":"not an IP address"}`, "endpoints[2].address", "not an IP address", false, false},
		{"conflict", 409, `{"message":"overlaps service other"}`, "", "overlaps service other", false, true},
		{"plain text body", 502, "bad gateway\n", "", "bad gateway", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(&recorder{code: tt.code, reply: tt.reply})
			defer srv.Close()
			c, err := NewClient(ClientConfig{BaseURL: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.GetService(context.Background(), "web")
			var se *StatusError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *StatusError", err)
			}
			if se.Code != tt.code || se.Body.Field != tt.wantField || se.Body.Message != tt.wantMessage {
				t.Errorf("StatusError = %+v", se)
			}
			if IsNotFound(err) != tt.wantNotFound || IsConflict(err) != tt.wantConflict {
				t.Errorf("IsNotFound=%v IsConflict=%v", IsNotFound(err), IsConflict(err))
			}
			if IsClientError(err) != (tt.code < 500) {
				t.Errorf("IsClientError = %v", IsClientError(err))
			}
		})
	}
}

// TestClientHealth503WithoutHealthIsAnError: only a daemon's Health body
// makes a 503 a "syncing" answer; anything else in front of it is an error.
func TestClientHealth503WithoutHealthIsAnError(t *testing.T) {
	for _, reply := range []string{`{"message":"upstream down"}`, "service unavailable\n"} {
		srv := httptest.NewServer(&recorder{code: 503, reply: reply})
		c, err := NewClient(ClientConfig{BaseURL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		if h, err := c.Health(context.Background()); err == nil {
			t.Errorf("503 %q: health %+v without an error", reply, h)
		}
		srv.Close()
	}
}

func TestClientApplyNeedsAName(t *testing.T) {
	c, err := NewClient(ClientConfig{BaseURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	var fe *FieldError
	if err := c.ApplyService(context.Background(), Service{}); !errors.As(err, &fe) || fe.Field != "name" {
		t.Fatalf("ApplyService = %v, want a name FieldError", err)
	}
}
