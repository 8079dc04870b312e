package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/telcolb/telcolb/k8s/annotations"
)

// reconcileOurs: annotations -> VIPs (recorded before use) -> rules on the
// daemons -> status. Every step that fails says so on the Service; the
// status only ever shows VIPs some daemon holds a rule for.
func (r *Reconciler) reconcileOurs(ctx context.Context, svc *corev1.Service) (reconcile.Result, error) {
	recorded, _, _ := recordedAllocation(svc)
	res, err := annotations.Parse(svc.Annotations, annotations.Options{
		AcceptLoxilb: r.cfg.AcceptLoxilbAnnotations,
		DefaultPool:  r.cfg.DefaultPool,
		PoolExists:   r.alloc.HasPool,
		Ignore:       []string{strings.TrimPrefix(AllocationAnnotation, annotations.Prefix)},
	})
	r.annotationNotes(svc, res)
	if err != nil {
		var msgs []string
		for _, e := range annotations.Errors(err) {
			msgs = append(msgs, e.Error())
		}
		r.failure(ctx, svc, ReasonInvalidAnnotation, strings.Join(msgs, "; "), recorded)
		return reconcile.Result{}, nil
	}
	spec := res.Spec
	att := r.newAttempt(ctx, svc, spec)
	err = att.run()
	r.metrics.observePools(r.alloc)
	if err != nil {
		reason := ReasonAllocationFailed
		var ae *allocError
		if errors.As(err, &ae) {
			reason = ae.reason
		}
		r.setWaiting(svc, true)
		r.failure(ctx, svc, reason, err.Error(), recorded)
		// Woken at once when an address frees; the requeue is a safety net.
		return reconcile.Result{RequeueAfter: 30 * time.Second}, nil
	}
	r.setWaiting(svc, false)
	// Record before use: a crash after this point keeps the same VIPs.
	if rec := att.record(); svc.Annotations[AllocationAnnotation] != rec || !controllerutil.ContainsFinalizer(svc, Finalizer) {
		upd := svc.DeepCopy()
		if upd.Annotations == nil {
			upd.Annotations = map[string]string{}
		}
		upd.Annotations[AllocationAnnotation] = rec
		controllerutil.AddFinalizer(upd, Finalizer)
		if err := r.client.Patch(ctx, upd, client.MergeFromWithOptions(svc, client.MergeFromWithOptimisticLock{})); err != nil {
			return reconcile.Result{}, fmt.Errorf("record allocation on %s: %w", key(svc), err)
		}
		*svc = *upd
	}
	att.commit()
	vips := append(append([]netip.Addr(nil), att.primary...), att.secondary...)
	if gone := att.moved(); len(gone) > 0 {
		r.note(svc, corev1.EventTypeNormal, ReasonVIPChanged, fmt.Sprintf("VIPs changed from %s to %s: the Service asks for other addresses",
			strings.Join(addrStrings(append(append([]netip.Addr(nil), att.recP...), att.recS...)), ", "), strings.Join(addrStrings(vips), ", ")))
	}
	kept := ""
	if len(att.keptDisallowed) > 0 {
		kept = fmt.Sprintf("VIPs kept although the configuration no longer allows them (%s): moving them would break the traffic using them; change the Service or set %s%s: \"true\" to move them",
			strings.Join(att.keptDisallowed, "; "), annotations.Prefix, annotations.Reallocate)
		r.note(svc, corev1.EventTypeWarning, ReasonAllocationKept, kept)
	}
	rules, notes, err := r.rules(ctx, svc, spec, att.primary, att.secondary)
	for _, n := range notes {
		r.note(svc, corev1.EventTypeWarning, ReasonEndpointSkipped, n)
	}
	if err != nil {
		// The rules in place (if any) stay: they still serve, and the
		// status keeps showing what they serve.
		r.failure(ctx, svc, ReasonInvalidService, err.Error(), vips)
		return reconcile.Result{}, nil
	}
	if err := r.daemons.Program(ctx, key(svc), rules); err != nil {
		r.failure(ctx, svc, ReasonDaemonError, err.Error(), vips)
		return reconcile.Result{RequeueAfter: 10 * time.Second}, nil
	}
	if len(rules) == 0 {
		msg := fmt.Sprintf("VIPs %s allocated; no ready endpoint yet, so no rule is programmed and no VIP is shown", strings.Join(addrStrings(vips), ", "))
		return reconcile.Result{}, r.writeStatus(ctx, svc, vips, metav1.ConditionFalse, ReasonNoEndpoints, msg)
	}
	if _, urls := r.daemons.Holding(key(svc)); len(urls) == 0 {
		msg := fmt.Sprintf("VIPs %s allocated; no daemon holds the rules yet (%d daemons, none synced)", strings.Join(addrStrings(vips), ", "), len(r.daemons.URLs()))
		if err := r.writeStatus(ctx, svc, vips, metav1.ConditionFalse, ReasonNotProgrammed, msg); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	msg := r.programmedMessage(svc, vips, len(rules))
	reason := ReasonProgrammed
	if kept != "" {
		reason, msg = ReasonAllocationKept, msg+"; "+kept
	}
	before := readyCondition(svc)
	if err := r.writeStatus(ctx, svc, vips, metav1.ConditionTrue, reason, msg); err != nil {
		return reconcile.Result{}, err
	}
	if before == nil || before.Status != metav1.ConditionTrue || before.Message != msg {
		// Once per change, also across controller restarts: the condition
		// is the memory.
		r.event(svc, corev1.EventTypeNormal, ReasonProgrammed, "Reconcile", "%s", msg)
	}
	return reconcile.Result{}, nil
}

// annotationNotes sends the parser's notes and, when loxilb.io/ names are
// present but not read, the Warning that says so.
func (r *Reconciler) annotationNotes(svc *corev1.Service, res annotations.Result) {
	for _, w := range res.Warnings {
		r.note(svc, corev1.EventTypeNormal, ReasonAnnotationNote, w)
	}
	if len(res.IgnoredLoxilb) > 0 {
		r.note(svc, corev1.EventTypeWarning, ReasonLoxilbIgnored, fmt.Sprintf(
			"annotations %s are ignored: the controller runs without --accept-loxilb-annotations, so this Service does not get what they ask for; start the controller with that flag or use the telcolb.io/ names",
			strings.Join(res.IgnoredLoxilb, ", ")))
	}
}

func readyCondition(svc *corev1.Service) *metav1.Condition {
	for i := range svc.Status.Conditions {
		if svc.Status.Conditions[i].Type == ConditionType {
			c := svc.Status.Conditions[i]
			return &c
		}
	}
	return nil
}
