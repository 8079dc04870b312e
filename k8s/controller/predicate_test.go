package controller

import "testing"

// Our own writes (allocation record, finalizer) must not cause another
// reconcile; a user's must.
func TestOwnWritesDoNotRequeue(t *testing.T) {
	rec := map[string]string{"a": "1", AllocationAnnotation: `{"ips":["10.0.0.1"]}`}
	if !sameUserAnnotations(map[string]string{"a": "1"}, rec) {
		t.Fatal("adding the allocation record counts as a user change")
	}
	if sameUserAnnotations(rec, map[string]string{"a": "2", AllocationAnnotation: rec[AllocationAnnotation]}) {
		t.Fatal("a user annotation change is missed")
	}
	if sameUserAnnotations(map[string]string{"a": "1"}, map[string]string{"a": "1", "b": ""}) {
		t.Fatal("an added user annotation is missed")
	}
	if !sameFinalizersBesidesOurs(nil, []string{Finalizer}) || !sameFinalizersBesidesOurs([]string{"x"}, []string{"x", Finalizer}) {
		t.Fatal("adding our finalizer counts as a user change")
	}
	if sameFinalizersBesidesOurs([]string{Finalizer}, nil) || sameFinalizersBesidesOurs(nil, []string{"x"}) {
		t.Fatal("removing ours or adding another's finalizer is missed")
	}
}
