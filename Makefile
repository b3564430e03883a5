# authd — the two set-up commands are `make run` and `make test`.
GO      ?= go
BIN     ?= bin/authd
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(HOME)/go/bin/staticcheck)

.PHONY: build run test test-services bench lint migrate clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/authd

## run: build and start authd on the embedded default (SQLite under ./data, in-process limiter, dev keys)
run: build
	./$(BIN) serve

## test: every test against real PostgreSQL and Redis (started locally when installed but not running)
test: test-services
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

test-services:
	@scripts/test-services.sh

## bench: benchmarks; each prints its figure beside the baseline measured in the same run
bench: test-services
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 20m ./...

## lint: gofmt, go vet, staticcheck (go install honnef.co/go/tools/cmd/staticcheck@v0.8.2)
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

## migrate: apply pending migrations to DATABASE_URL (default: the embedded SQLite file)
migrate: build
	./$(BIN) migrate up

clean:
	rm -rf bin
