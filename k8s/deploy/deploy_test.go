// Package deploy_test builds the manifests of k8s/deploy with kustomize
// (its Go library, what kubectl kustomize runs) and checks what the daemon and the controller are
// given: the daemon accepts its flags (API over TLS off loopback, the HA
// group), every $(VAR) it uses is defined, and the controller verifies the
// name the daemons' certificate carries.
package deploy_test

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/telcolb/telcolb/cmd/telcolb/app"
)

// kustomize builds dir; with components, a temporary overlay adds them to
// the base (the way an operator enables them).
func kustomize(t *testing.T, components ...string) map[string][]byte {
	t.Helper()
	base, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := base
	if len(components) > 0 {
		dir = t.TempDir()
		// kustomize wants relative paths to other roots.
		rel, err := filepath.Rel(dir, base)
		if err != nil {
			t.Fatal(err)
		}
		var k strings.Builder
		k.WriteString("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [" + rel + "]\ncomponents:\n")
		for _, c := range components {
			k.WriteString("  - " + filepath.Join(rel, c) + "\n")
		}
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// LoadRestrictionsNone: the overlay above names the base by a path
	// outside its own root, as an operator's overlay does.
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = kustypes.LoadRestrictionsNone
	rm, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	docs := map[string][]byte{}
	for _, doc := range strings.Split(string(out), "\n---\n") {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("rendered document: %v\n%s", err, doc)
		}
		docs[meta.Kind+"/"+meta.Metadata.Name] = []byte(doc)
	}
	return docs
}

func decode[T any](t *testing.T, docs map[string][]byte, key string) *T {
	t.Helper()
	raw, ok := docs[key]
	if !ok {
		t.Fatalf("%s not rendered", key)
	}
	var v T
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return &v
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand resolves $(VAR) as the kubelet does, from sample values for the
// fields it fills in; a reference to a variable the container does not
// define is an error (the kubelet would pass it on literally).
func expand(t *testing.T, c corev1.Container, s string) string {
	t.Helper()
	defined := map[string]bool{}
	for _, e := range c.Env {
		defined[e.Name] = true
	}
	samples := map[string]string{"POD_IP": "192.0.2.11", "NODE_NAME": "node-a", "TELCOLB_INTERFACES": "eth0",
		"TELCOLB_HA_MEMBERS": "node-a=192.0.2.11:7946,node-b=192.0.2.12:7946"}
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := varRef.FindStringSubmatch(ref)[1]
		if !defined[name] {
			t.Errorf("%q uses $(%s), which the container does not define", s, name)
		}
		v, ok := samples[name]
		if !ok {
			t.Errorf("no sample value for $(%s)", name)
		}
		return v
	})
}

// container finds name in list (a pod's containers or init containers).
func container(t *testing.T, list []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range list {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func mountOf(t *testing.T, c corev1.Container, path string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(path, m.MountPath+"/") {
			return m
		}
	}
	t.Fatalf("%s: nothing mounted for %s", c.Name, path)
	return corev1.VolumeMount{}
}

// daemonOptions parses the daemon's args as the daemon does.
func daemonOptions(t *testing.T, c corev1.Container) app.Options {
	t.Helper()
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = expand(t, c, a)
	}
	o, err := app.ParseOptions(args, io.Discard)
	if err != nil {
		t.Fatalf("the daemon refuses its manifest's flags %q: %v", args, err)
	}
	return o
}

func checkAPITLS(t *testing.T, docs map[string][]byte) {
	ds := decode[appsv1.DaemonSet](t, docs, "DaemonSet/telcolb")
	d := container(t, ds.Spec.Template.Spec.Containers, "telcolb")
	o := daemonOptions(t, d)
	if o.APITLSCertFile == "" || o.APIAllowInsecureHTTP {
		t.Errorf("daemon API without TLS: %+v", o)
	}
	mountOf(t, d, o.APITLSCertFile)
	// The readiness probe is telcolbctl ready, verifying the daemon with
	// the same CA and name as the controller.
	if p := d.ReadinessProbe; p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, []string{"telcolbctl", "ready"}) {
		t.Errorf("readiness probe %+v, want exec telcolbctl ready", d.ReadinessProbe)
	}
	if got := expand(t, d, envValue(d, "TELCOLB_SERVER")); got != "https://192.0.2.11:8091" {
		t.Errorf("TELCOLB_SERVER %q", got)
	}
	mountOf(t, d, envValue(d, "TELCOLB_CA_FILE"))

	dep := decode[appsv1.Deployment](t, docs, "Deployment/telcolb-controller")
	ctl := container(t, dep.Spec.Template.Spec.Containers, "controller")
	flags := map[string]string{}
	for _, a := range ctl.Args {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		flags[k] = v
	}
	if flags["daemon-scheme"] != "https" || flags["daemon-insecure-skip-verify"] != "" {
		t.Errorf("controller reaches the daemons with %q", ctl.Args)
	}
	name := flags["daemon-tls-server-name"]
	if name == "" || name != envValue(d, "TELCOLB_TLS_SERVER_NAME") {
		t.Errorf("controller expects %q, the probe %q", name, envValue(d, "TELCOLB_TLS_SERVER_NAME"))
	}
	m := mountOf(t, ctl, flags["daemon-ca-file"])
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Name == m.Name && (v.Secret == nil || len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != "ca.crt") {
			t.Errorf("controller volume %s: %+v, want only ca.crt of the Secret", v.Name, v.VolumeSource)
		}
	}
	// The Service lists syncing daemons: they get their rules meanwhile.
	svc := decode[corev1.Service](t, docs, "Service/telcolb-daemon")
	if !svc.Spec.PublishNotReadyAddresses {
		t.Error("telcolb-daemon does not publish not-ready daemons")
	}
}

func TestBaseServesTheAPIOverVerifiedTLS(t *testing.T) {
	docs := kustomize(t)
	checkAPITLS(t, docs)
	ds := decode[appsv1.DaemonSet](t, docs, "DaemonSet/telcolb")
	if o := daemonOptions(t, container(t, ds.Spec.Template.Spec.Containers, "telcolb")); o.HA.NodeName != "" {
		t.Errorf("HA on without the ha component: %+v", o.HA)
	}
}

func TestHAComponentConfiguresTheGroup(t *testing.T) {
	for _, comps := range [][]string{{"ha"}, {"ha", "cert-manager"}} {
		t.Run(strings.Join(comps, "+"), func(t *testing.T) {
			docs := kustomize(t, comps...)
			checkAPITLS(t, docs)
			ds := decode[appsv1.DaemonSet](t, docs, "DaemonSet/telcolb")
			d := container(t, ds.Spec.Template.Spec.Containers, "telcolb")
			var nodeFromDownwardAPI, membersFromConfigMap bool
			for _, e := range d.Env {
				nodeFromDownwardAPI = nodeFromDownwardAPI || e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
				membersFromConfigMap = membersFromConfigMap || e.Name == "TELCOLB_HA_MEMBERS" && e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil &&
					e.ValueFrom.ConfigMapKeyRef.Name == "telcolb-ha" && e.ValueFrom.ConfigMapKeyRef.Key == "members"
			}
			if !nodeFromDownwardAPI || !membersFromConfigMap {
				t.Errorf("node name from the downward API %v, members from the ConfigMap %v", nodeFromDownwardAPI, membersFromConfigMap)
			}
			cm := decode[corev1.ConfigMap](t, docs, "ConfigMap/telcolb-ha")
			if cm.Data["members"] == "" {
				t.Fatal("ConfigMap telcolb-ha has no members")
			}
			o := daemonOptions(t, d)
			hc, err := o.HA.Config()
			if err != nil || hc == nil {
				t.Fatalf("HA config of node-a: %v, %v", hc, err)
			}
			if hc.Node.Self != "node-a" || len(hc.Node.Peers) != 1 || hc.Node.Peers[0].Name != "node-b" {
				t.Errorf("node-a's group: %+v", hc.Node)
			}
			// The certificate files come from the ha-tls volume.
			m := mountOf(t, d, hc.Node.CertFile)
			for _, f := range []string{hc.Node.CertFile, hc.Node.KeyFile, hc.Node.CAFile} {
				if mountOf(t, d, f).Name != m.Name {
					t.Errorf("%s not in volume %s", f, m.Name)
				}
			}
			var vol *corev1.Volume
			for i := range ds.Spec.Template.Spec.Volumes {
				if v := &ds.Spec.Template.Spec.Volumes[i]; v.Name == m.Name {
					vol = v
				}
			}
			if vol == nil {
				t.Fatalf("no volume %s", m.Name)
			}
			if !slices.Contains(comps, "cert-manager") {
				if vol.Secret == nil || vol.Secret.SecretName != "telcolb-ha-tls" {
					t.Errorf("volume %s: %+v, want Secret telcolb-ha-tls", vol.Name, vol.VolumeSource)
				}
				return
			}
			// cert-manager: every member's certificate lands as
			// <node>.crt/.key (what --ha-tls-cert-file names), ca.crt once.
			if vol.Secret != nil || vol.Projected == nil {
				t.Fatalf("volume %s: %+v, want only the projected per-member Secrets", vol.Name, vol.VolumeSource)
			}
			paths := map[string]string{}
			for _, src := range vol.Projected.Sources {
				for _, it := range src.Secret.Items {
					paths[it.Path] = src.Secret.Name + "/" + it.Key
				}
			}
			for _, member := range strings.Split(cm.Data["members"], ",") {
				node, _, _ := strings.Cut(member, "=")
				if paths[node+".crt"] != "telcolb-ha-"+node+"/tls.crt" || paths[node+".key"] != "telcolb-ha-"+node+"/tls.key" {
					t.Errorf("member %s: files %v", node, paths)
				}
				cert := decode[struct {
					Spec struct {
						SecretName string   `json:"secretName"`
						DNSNames   []string `json:"dnsNames"`
						IssuerRef  struct {
							Name string `json:"name"`
						} `json:"issuerRef"`
					} `json:"spec"`
				}](t, docs, "Certificate/telcolb-ha-"+node)
				if !slices.Equal(cert.Spec.DNSNames, []string{node}) || cert.Spec.IssuerRef.Name != "telcolb-ha-ca" {
					t.Errorf("Certificate of %s: %+v", node, cert.Spec)
				}
			}
			if paths["ca.crt"] == "" {
				t.Errorf("no ca.crt in %v", paths)
			}
			api := decode[struct {
				Spec struct {
					SecretName string   `json:"secretName"`
					DNSNames   []string `json:"dnsNames"`
				} `json:"spec"`
			}](t, docs, "Certificate/telcolb-api-tls")
			if !slices.Contains(api.Spec.DNSNames, envValue(d, "TELCOLB_TLS_SERVER_NAME")) || api.Spec.SecretName != "telcolb-api-tls" {
				t.Errorf("API Certificate %+v does not name what the clients expect", api.Spec)
			}
		})
	}
}

// TestNodeSetupTurnsRedirectsOffBeforeTheDaemon: in every combination of
// components the DaemonSet runs the daemon's own node-setup one-shot as a
// privileged init container on the daemon's interfaces (the daemon itself
// cannot write /proc/sys), and the daemon stays unprivileged.
func TestNodeSetupTurnsRedirectsOffBeforeTheDaemon(t *testing.T) {
	for _, comps := range [][]string{nil, {"ha"}, {"ha", "cert-manager"}} {
		t.Run(strings.Join(append([]string{"base"}, comps...), "+"), func(t *testing.T) {
			ds := decode[appsv1.DaemonSet](t, kustomize(t, comps...), "DaemonSet/telcolb")
			spec := ds.Spec.Template.Spec
			daemon := container(t, spec.Containers, "telcolb")
			setup := container(t, spec.InitContainers, "node-setup")
			if sc := setup.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
				t.Errorf("node-setup is not privileged (it writes /proc/sys): %+v", setup.SecurityContext)
			}
			if setup.Image != daemon.Image {
				t.Errorf("node-setup image %q, the daemon's %q", setup.Image, daemon.Image)
			}
			so, do := daemonOptions(t, setup), daemonOptions(t, daemon)
			if !so.NodeSetup || do.NodeSetup {
				t.Errorf("node-setup mode: init container %v, daemon %v; want true, false", so.NodeSetup, do.NodeSetup)
			}
			if !slices.Equal(so.Interfaces, do.Interfaces) {
				t.Errorf("node-setup on interfaces %v, the daemon attaches %v", so.Interfaces, do.Interfaces)
			}
			if sc := daemon.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
				t.Error("the daemon container is privileged")
			}
		})
	}
}
