package api

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

type openAPIDoc struct {
	OpenAPI    string                    `json:"openapi"`
	Paths      map[string]map[string]any `json:"paths"`
	Components struct {
		Schemas map[string]struct {
			Properties map[string]any `json:"properties"`
		} `json:"schemas"`
	} `json:"components"`
}

// TestOpenAPISchemasMatchTheGoTypes keeps the document honest: every JSON
// field of every resource is described, and nothing else.
func TestOpenAPISchemasMatchTheGoTypes(t *testing.T) {
	var doc openAPIDoc
	if err := yaml.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatalf("parse openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0") {
		t.Errorf("openapi = %q, want 3.0.x", doc.OpenAPI)
	}
	types := map[string]any{
		"Service": Service{}, "Endpoint": Endpoint{}, "Probe": Probe{}, "DiameterSpec": DiameterSpec{},
		"ServiceStatus": ServiceStatus{}, "EndpointStatus": EndpointStatus{},
		"Conn": Conn{}, "ConnPath": ConnPath{}, "Health": Health{}, "Error": Error{},
		"AdvertisementConfig": AdvertisementConfig{}, "BGPConfig": BGPConfig{}, "BGPPeer": BGPPeer{}, "BFDProfile": BFDProfile{},
		"L2Config": L2Config{}, "L2Member": L2Member{}, "Advertisement": Advertisement{}, "AdvertisementStatus": AdvertisementStatus{},
		"BGPPeerStatus": BGPPeerStatus{}, "BFDSessionStatus": BFDSessionStatus{}, "VIPStatus": VIPStatus{},
	}
	for name, v := range types {
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("schema %s missing", name)
			continue
		}
		var want, got []string
		rt := reflect.TypeOf(v)
		for i := 0; i < rt.NumField(); i++ {
			want = append(want, strings.Split(rt.Field(i).Tag.Get("json"), ",")[0])
		}
		for p := range schema.Properties {
			got = append(got, p)
		}
		sort.Strings(want)
		sort.Strings(got)
		if !reflect.DeepEqual(want, got) {
			t.Errorf("schema %s properties = %v, Go fields = %v", name, got, want)
		}
	}
}
