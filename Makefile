# fnrun — run function calls in containers over Docker and containerd.
#
# `make demo` runs a function through every driver; `make test` runs every
# test against the real daemons, which `make up` installs and starts.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

FNRUN_STATE ?= /var/tmp/fnrun-env
export FNRUN_STATE
# Loads the addresses `make up` wrote, so recipes see FNRUN_DOCKER_HOST etc.
WITH_ENV := set -a; . $(FNRUN_STATE)/env; set +a;

GO_TEST_FLAGS ?= -race -timeout 40m
# The daemons' state is not among the inputs go test caches results by.
INTEGRATION_FLAGS := -count=1
BENCH ?= .
BENCH_FLAGS ?= -benchtime 30x -count 1

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

.PHONY: up
up: ## Install (if missing) and start dockerd, containerd and the registries; build the test image.
	@bash test/env/up.sh

.PHONY: down
down: ## Stop what `make up` started (keeps the built images).
	@bash test/env/down.sh

.PHONY: test
test: up ## Vet, then run every test with -race, integration tests included.
	go vet ./...
	$(WITH_ENV) go test $(INTEGRATION_FLAGS) $(GO_TEST_FLAGS) ./...

.PHONY: test-unit
test-unit: ## Run the tests that need no daemon (integration tests are skipped with -short).
	go vet ./...
	go test -short $(GO_TEST_FLAGS) ./...

.PHONY: build
build: ## Build the fnrun command into bin/fnrun.
	go build -o bin/fnrun ./cmd/fnrun

.PHONY: demo
demo: up build ## Run a function through each driver, show the pool at work, print a short bench table, call fnrun serve cold and hot.
	$(WITH_ENV) go run ./cmd/demo
	$(WITH_ENV) bin/fnrun pool --driver docker --size 2
	$(WITH_ENV) bin/fnrun pool --driver containerd --size 2
	$(WITH_ENV) bin/fnrun bench --all --quick
	@echo "--- fnrun serve: deploy the test function with Fn's API, call it cold and hot, stop with SIGTERM"
	$(WITH_ENV) bash test/serve/demo.sh

.PHONY: bench
bench: up build ## Run the Go benchmarks, then fnrun bench with its chart (bench.png).
	$(WITH_ENV) go test -run '^$$' -bench '$(BENCH)' $(BENCH_FLAGS) ./...
	$(WITH_ENV) bin/fnrun bench --all --n 40 --png bench.png

.PHONY: load
load: up build ## Load fnrun serve with wrk (hot, thawed, cold; concurrency 1, 8, 32; both runtimes) next to fnrun bench (about 4 min).
	$(WITH_ENV) bash test/serve/load.sh

.PHONY: test-faults
test-faults: up ## Fault, storm, soak, bad-input and security tests on private daemons (about 6 min).
	$(WITH_ENV) CI=true go test $(INTEGRATION_FLAGS) -race -timeout 20m -v ./test/faults/

.PHONY: soak
soak: up ## Long soak: 1000 sequential + 1000 concurrent calls per driver, with start/end figures.
	$(WITH_ENV) FNRUN_SOAK_CALLS=1000 go test $(INTEGRATION_FLAGS) -run TestSoak -timeout 60m -v ./test/faults/

.PHONY: fuzz
fuzz: ## Fuzz image parsing and command splitting for a short while.
	go test -run '^$$' -fuzz FuzzParseImage -fuzztime 30s ./drivers/
	go test -run '^$$' -fuzz FuzzSplitCommand -fuzztime 30s ./drivers/
	$(WITH_ENV) go test -run '^$$' -fuzz FuzzCreateCookie -fuzztime 30s ./test/faults/

.PHONY: lint
lint: ## gofmt and go vet.
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
