# relay — common tasks. `make demo` and `make test` work on a fresh machine.
GO      ?= go
PKGS    := ./...
BIN     := bin/relay

IMAGE   ?= relay:dev

.PHONY: all build image demo test deps lint unit bench clean

all: build

# build: a static binary (no cgo), so the same file runs on any Linux and in
# the FROM scratch image; -buildvcs=auto records the commit for relay version.
build:
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -ldflags "-s -w" -o $(BIN) ./cmd/relay

# image: the container image (Dockerfile) from that binary, with podman (or docker).
image: build
	scripts/build-image.sh $(IMAGE)

deps:
	@scripts/install-deps.sh

# demo: relay on a throwaway embedded PostgreSQL with a demo receiver.
demo: build
	@scripts/install-deps.sh >/dev/null
	$(BIN) demo $(DEMO_FLAGS)

# lint: gofmt, go vet, staticcheck, and go.mod/go.sum as `go mod tidy` leaves
# them (a requirement marked // indirect that the code imports, or a missing
# checksum, fails here rather than in someone else's build).
lint:
	@$(GO) mod tidy -diff >/dev/null || { echo "go mod tidy would change go.mod or go.sum:"; $(GO) mod tidy -diff; exit 1; }
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	bin/staticcheck $(PKGS)

unit:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

# test: install what is missing, then format, vet, staticcheck and the race-enabled suite.
test: deps lint unit

bench: build
	$(BIN) bench $(BENCH_FLAGS)

clean:
	rm -rf bin relay-data
