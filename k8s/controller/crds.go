package controller

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/telcolb/telcolb/k8s/apis/v1alpha1"
)

// setupCRDs adds the IPPool controller and the advertiser.
func (r *Reconciler) setupCRDs(mgr manager.Manager) error {
	toPools := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{allPoolsRequest}
	})
	if err := ctrl.NewControllerManagedBy(mgr).Named(r.cfg.Name+"-ippools").
		Watches(&v1alpha1.IPPool{}, toPools, builder.WithPredicates(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{})).
		Complete(&ipPoolReconciler{r: r}); err != nil {
		return fmt.Errorf("controller: build IPPool controller: %w", err)
	}
	return r.setupAdvertiser(mgr)
}

// hasCRPools reports whether any IPPool object is in use.
func (r *Reconciler) hasCRPools() bool {
	for _, pp := range r.pools.snapshot() {
		if pp.fromCR {
			return true
		}
	}
	return false
}

// enqueueAllServices reconciles every Service of our class again (the
// pools changed). It does not block the caller.
func (r *Reconciler) enqueueAllServices(ctx context.Context) {
	svcs := r.ourServices(ctx)
	go func() {
		for _, s := range svcs {
			select {
			case r.wake <- event.TypedGenericEvent[reconcile.Request]{Object: reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}}}:
			case <-ctx.Done():
				return
			}
		}
	}()
}
