# telcolb: the two commands a newcomer needs are `make demo` and `make test`.
SHELL       := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO          ?= go
BIN         := $(CURDIR)/bin
CACHE       := $(CURDIR)/.cache
ENVTEST_BIN := $(CACHE)/envtest/bin
# Tests that need a real API server must not skip in CI.
export TELCOLB_REQUIRE_ENVTEST ?= 1
export KUBEBUILDER_ASSETS      ?= $(ENVTEST_BIN)
TEST_TIMEOUT ?= 45m
# Test packages run one at a time by default: the labs time failovers,
# echo gaps and BFD detection on a 2-core machine, and two labs side by
# side measure each other (about 40 minutes instead of 23). TEST_P=2 runs
# two at once.
TEST_P ?= 1

.PHONY: all deps generate check-generate crds check-crds build test test-unit vet demo bench envtest-bins clean fuzz-smoke

all: build

deps:
	@bash hack/install-deps.sh

# Regenerates the eBPF objects and their Go loaders (committed, so a plain
# Go build needs no clang).
generate: deps
	cd bpf && $(GO) generate ./...

# Fails when a committed eBPF object or loader is not what `make generate`
# builds from the sources (lb.c or a header edited without regenerating).
# Builds into a temporary directory: the working tree is left alone.
check-generate: deps
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  (cd bpf && GOFILE=gen.go GOPACKAGE=bpf sh gen.sh "$$tmp" >/dev/null) || exit 1; \
	  for f in lb_bpfel.o lb_bpfel.go sock_bpfel.o sock_bpfel.go clock_bpfel.o clock_bpfel.go lb_enums.go; do \
	    cmp -s "$$tmp/$$f" "bpf/$$f" || { echo "check-generate: bpf/$$f differs from what make generate builds: run make generate and commit it" >&2; exit 1; }; \
	  done; echo "check-generate: bpf/ generated files match their sources"

# The telcolb.io CRDs (k8s/deploy/crds) and deepcopy code
# (k8s/apis/v1alpha1/zz_generated.deepcopy.go) come from the Go types in
# k8s/apis/v1alpha1; both are committed.
CONTROLLER_GEN ?= $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
crds:
	$(CONTROLLER_GEN) object paths=./k8s/apis/... crd:crdVersions=v1 output:crd:artifacts:config=k8s/deploy/crds

# Fails when the committed CRDs or deepcopy code are not what `make crds`
# builds from the types; generates into a temporary directory.
check-crds:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  $(CONTROLLER_GEN) object paths=./k8s/apis/... crd:crdVersions=v1 output:crd:dir="$$tmp/crds" output:object:dir="$$tmp/obj" || exit 1; \
	  cmp -s "$$tmp/obj/zz_generated.deepcopy.go" k8s/apis/v1alpha1/zz_generated.deepcopy.go || { echo "check-crds: k8s/apis/v1alpha1/zz_generated.deepcopy.go is stale: run make crds and commit it" >&2; exit 1; }; \
	  diff -r -q "$$tmp/crds" k8s/deploy/crds >/dev/null || { echo "check-crds: k8s/deploy/crds differs from the types: run make crds and commit it" >&2; exit 1; }; \
	  echo "check-crds: CRDs and deepcopy match k8s/apis/v1alpha1"

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

envtest-bins:
	@bash k8s/envtest-tools/build.sh $(ENVTEST_BIN)

# Everything: unit, byte-exact datapath (BPF_PROG_TEST_RUN), namespace
# end-to-end, real API server. Needs root (eBPF, namespaces).
test: deps envtest-bins vet check-generate check-crds
	@bash hack/sweep-namespaces.sh
	$(GO) test -count=1 -p $(TEST_P) -timeout $(TEST_TIMEOUT) ./... 2>&1 | tee $(CACHE)/test.log; \
	  rc=$${PIPESTATUS[0]}; bash hack/sweep-namespaces.sh; exit $$rc

test-unit:
	$(GO) test -count=1 -short ./...

# Short fuzzing of every parser (the corpora run as plain tests in `make test`).
fuzz-smoke:
	@for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$t/*_test.go | sed 's/func //'); do \
	    echo "== $$t $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$t || exit 1; done; done

demo: deps build
	$(GO) run ./scenarios/demo

# Every TestBench* function, one at a time (scenarios/bench/run): each
# figure is the median of interleaved rounds with its spread, one
# `BENCH <name> <median> <unit> target <op> <value> spread <min>..<max> rounds <n>`
# line each, in .cache/bench.txt; ends with a summary against the targets and
# the previous run. BENCH_RUN=<regexp> runs only the matching benchmarks.
BENCH_RUN ?=
BENCH_TIMEOUT ?= 60m
bench: deps envtest-bins build
	@mkdir -p $(CACHE)
	$(GO) run ./scenarios/bench/run --cache $(CACHE) --run '$(BENCH_RUN)' --timeout $(BENCH_TIMEOUT)

clean:
	rm -rf $(BIN) $(CACHE)/test.log $(CACHE)/bench.txt $(CACHE)/bench.prev.txt $(CACHE)/bench.log $(CACHE)/bench-summary.txt
