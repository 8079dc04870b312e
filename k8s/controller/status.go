package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/k8s/annotations"
)

func (r *Reconciler) event(svc *corev1.Service, typ, reason, action, note string, args ...any) {
	_ = action
	r.recorder.Eventf(svc, typ, reason, note, args...)
}

// noteLog remembers which notes (Events about the Service's annotations,
// not its state) were sent for the Service as it is now, so a reconcile
// caused by an EndpointSlice or a resync does not repeat them: each costs
// an API write, and repeating it says nothing new.
type noteLog struct {
	mu        sync.Mutex
	byService map[string]*serviceNotes
}

type serviceNotes struct {
	inputs string // generation and annotation fingerprint they were sent for
	sent   map[string]bool
}

func (n *noteLog) first(svc *corev1.Service, msg string) bool {
	k := key(svc)
	in := fmt.Sprintf("%d/%s", svc.Generation, inputsOf(svc))
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.byService[k]
	if s == nil || s.inputs != in {
		s = &serviceNotes{inputs: in, sent: map[string]bool{}}
		n.byService[k] = s
	}
	if s.sent[msg] {
		return false
	}
	s.sent[msg] = true
	return true
}

func (n *noteLog) forget(k string) {
	n.mu.Lock()
	delete(n.byService, k)
	n.mu.Unlock()
}

// note sends an Event (and a log line) once per change of the Service.
func (r *Reconciler) note(svc *corev1.Service, typ, reason, msg string) {
	if !r.notes.first(svc, reason+"\x00"+msg) {
		return
	}
	r.event(svc, typ, reason, "Reconcile", "%s", msg)
	if typ == corev1.EventTypeWarning {
		r.log.Warn(msg, "service", key(svc), "reason", reason)
	} else {
		r.log.Info(msg, "service", key(svc), "reason", reason)
	}
}

// failure reports a problem on the Service: a Warning Event, the condition
// and a metric. The controller keeps running whatever the cause. vips are
// the Service's addresses in status order; only those a daemon holds are
// shown.
func (r *Reconciler) failure(ctx context.Context, svc *corev1.Service, reason, msg string, vips []netip.Addr) {
	r.metrics.reconcileErrors.WithLabelValues(reason).Inc()
	r.note(svc, corev1.EventTypeWarning, reason, msg)
	if err := r.writeStatus(ctx, svc, vips, metav1.ConditionFalse, reason, msg); err != nil {
		r.log.Error("write status", "service", key(svc), "error", err)
	}
}

// writeStatus sets the condition and status.loadBalancer.ingress. The
// ingress lists a VIP only while at least one synced daemon holds a rule
// for it, so `kubectl get svc` never shows an address that works nowhere:
// first vips (the Service's addresses, primary first) in that order, then
// any other address a daemon still holds for it (rules of a former VIP not
// yet replaced).
func (r *Reconciler) writeStatus(ctx context.Context, svc *corev1.Service, vips []netip.Addr, status metav1.ConditionStatus, reason, msg string) error {
	held, _ := r.daemons.Holding(key(svc))
	var ingress []corev1.LoadBalancerIngress
	listed := map[string]bool{}
	for _, a := range vips {
		if s := a.String(); held[s] > 0 && !listed[s] {
			listed[s] = true
			ingress = append(ingress, corev1.LoadBalancerIngress{IP: s})
		}
	}
	var rest []string
	for s := range held {
		if !listed[s] {
			rest = append(rest, s)
		}
	}
	sort.Strings(rest)
	for _, s := range rest {
		ingress = append(ingress, corev1.LoadBalancerIngress{IP: s})
	}
	st := svc.DeepCopy()
	st.Status.LoadBalancer.Ingress = ingress
	if len(msg) > 32000 {
		msg = msg[:32000]
	}
	meta.SetStatusCondition(&st.Status.Conditions, metav1.Condition{
		Type: ConditionType, Status: status, Reason: reason, Message: msg, ObservedGeneration: svc.Generation,
	})
	// The Announced condition is written here too, so one writer owns the
	// Service's conditions (a second one would overwrite this one's list).
	before := meta.FindStatusCondition(svc.Status.Conditions, AnnouncedConditionType)
	ann, announced := r.announcement(key(svc))
	if announced {
		meta.SetStatusCondition(&st.Status.Conditions, metav1.Condition{
			Type: AnnouncedConditionType, Status: ann.status, Reason: ann.reason, Message: ann.message, ObservedGeneration: svc.Generation,
		})
	} else {
		meta.RemoveStatusCondition(&st.Status.Conditions, AnnouncedConditionType)
	}
	if equality.Semantic.DeepEqual(st.Status, svc.Status) {
		return nil
	}
	if err := r.client.Status().Patch(ctx, st, client.MergeFrom(svc)); err != nil {
		return fmt.Errorf("patch status of %s: %w", key(svc), err)
	}
	*svc = *st
	if announced && (before == nil || before.Message != ann.message) {
		// Once per change, like Programmed: the condition is the memory.
		typ := corev1.EventTypeNormal
		if ann.status != metav1.ConditionTrue {
			typ = corev1.EventTypeWarning
		}
		r.event(svc, typ, ann.reason, "Announce", "%s", ann.message)
	}
	return nil
}

// programmedMessage says where the Service is programmed: its VIPs, and
// which daemons hold its rules.
func (r *Reconciler) programmedMessage(svc *corev1.Service, vips []netip.Addr, rules int) string {
	_, urls := r.daemons.Holding(key(svc))
	total := len(r.daemons.URLs())
	list := urls
	if len(list) > 8 {
		list = append(append([]string(nil), list[:8]...), fmt.Sprintf("and %d more", len(urls)-8))
	}
	return fmt.Sprintf("VIPs %s: %d rules programmed on %d of %d daemons (%s)",
		strings.Join(addrStrings(vips), ", "), rules, len(urls), total, strings.Join(list, ", "))
}

// annotationFor names what the user wrote that produced a daemon field the
// daemon rejects: the annotation key on the Service (under the prefix it
// was found with), or the Service field.
func annotationFor(svc *corev1.Service, field string) string {
	names := map[string][]string{
		"mode":                  {annotations.LBMode},
		"select":                {annotations.EPSelect},
		"idleTimeoutSeconds":    {annotations.Timeout},
		"secondaryVIPs":         {annotations.SecondaryIPs, annotations.PoolSelectSecondary, annotations.LBMode},
		"n2":                    {annotations.N2},
		"pfcp":                  {annotations.PFCP},
		"diameter":              {annotations.Diameter},
		"diameter.originHost":   {annotations.DiameterOriginHost},
		"diameter.originRealm":  {annotations.DiameterOriginRealm},
		"diameter.mode":         {annotations.Diameter},
		"diameter.applications": {annotations.DiameterApplications},
		"probe.type":            {annotations.ProbeType, annotations.Liveness},
		"probe.port":            {annotations.ProbePort},
		"probe.request":         {annotations.ProbeReq},
		"probe.response":        {annotations.ProbeResp},
		"probe.intervalSeconds": {annotations.ProbeInterval, annotations.ProbeTimeout},
		"probe.timeoutSeconds":  {annotations.ProbeTimeout},
		"probe.retries":         {annotations.ProbeRetries},
		"vip":                   {annotations.StaticIP, annotations.IPAM},
	}
	root, _, _ := strings.Cut(field, "[")
	var found []string
	for _, n := range names[root] {
		for _, p := range []string{annotations.Prefix, annotations.LoxilbPrefix} {
			if _, ok := svc.Annotations[p+n]; ok {
				found = append(found, p+n)
				break
			}
		}
	}
	switch {
	case len(found) > 0:
		return "annotation " + strings.Join(found, ", ")
	case root == "endpoints":
		return "the Service's endpoints (spec.selector, " + annotations.Prefix + annotations.UsePodNetwork + ", " + annotations.Prefix + annotations.MultusNets + ")"
	case root == "port" || root == "portEnd" || root == "protocol":
		return "spec.ports"
	}
	return ""
}

// rejectedBy wraps a daemon validation error of one port's rule with what
// the user should change.
func rejectedBy(svc *corev1.Service, sp corev1.ServicePort, err error) error {
	var fe *api.FieldError
	cause := ""
	if errors.As(err, &fe) {
		if what := annotationFor(svc, fe.Field); what != "" {
			cause = " (from " + what + ")"
		}
	}
	return fmt.Errorf("port %d/%s: the daemon would reject this rule: %w%s", sp.Port, sp.Protocol, err, cause)
}
