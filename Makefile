# The original service's make targets, as a thin layer over the npm scripts and the `supervisor`
# CLI (packages/cli): every recipe is one command, and the command is what to run without make.
# `make help` lists them. test/models/makefile.test.ts checks that each one names an npm script
# or a CLI command that exists.

CLI := node packages/cli/dist/main.js
# The per-model shortcuts: one target per envs/worker.<name>.env (make demo, make gemma3-270m, ...).
WORKERS := $(patsubst envs/worker.%.env,%,$(wildcard envs/worker.*.env))
WORKER ?=

.PHONY: help build-llama build build-all start stop list-workers status pull test test-all logs events bench docker-build compose-up compose-down $(WORKERS)
.DEFAULT_GOAL := help

help: ## this list
	@echo 'make build-llama            llama.cpp and the native addon (npm run build:addon)'
	@echo 'make build                  the TypeScript packages (npm run build:ts)'
	@echo 'make build-all              everything: llama.cpp source, addon, packages, test models (npm run build)'
	@echo 'make start [WORKER=name]    run the supervisor with one worker, or every worker without WORKER'
	@echo 'make stop [WORKER=name]     stop one worker, or the whole supervisor'
	@echo 'make list-workers           workers of envs/: port, model file, state (supervisor list-workers)'
	@echo 'make status                 the running supervisor (supervisor status)'
	@echo 'make pull WORKER=name       download a worker model from its MODEL_URL (supervisor pull)'
	@echo 'make test WORKER=name       a sample request to a worker (supervisor test)'
	@echo 'make test-all               the test suite (npm test)'
	@echo 'make logs WORKER=name       recent requests of a worker (supervisor logs)'
	@echo 'make events WORKER=name     recent lifecycle events of a worker (supervisor events)'
	@echo 'make bench                  lmserve against llama-server (npm run bench)'
	@echo 'make docker-build           the container image (docker build -t lmserve .)'
	@echo 'make compose-up / compose-down   nats-server and the service (docker compose)'
	@echo 'make <worker>               start the supervisor with that worker only: $(WORKERS)'

build-llama: ## llama.cpp and the addon
	npm run build:addon

build: ## the TypeScript packages
	npm run build:ts

build-all: ## everything npm install builds
	npm run build

start: ## the supervisor in the foreground
	$(CLI) start $(if $(WORKER),$(WORKER),--all)

stop: ## one worker, or the supervisor
	$(CLI) stop $(WORKER)

list-workers:
	$(CLI) list-workers

status:
	$(CLI) status

pull:
	$(CLI) pull $(WORKER)

test:
	$(CLI) test $(WORKER)

test-all:
	npm test

logs:
	$(CLI) logs $(WORKER)

events:
	$(CLI) events $(WORKER)

bench:
	npm run bench

docker-build:
	docker build -t lmserve .

compose-up:
	docker compose up -d

compose-down:
	docker compose down

$(WORKERS):
	$(CLI) start $@
