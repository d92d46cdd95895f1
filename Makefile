# BeLink for PostgreSQL: set-up, build, tests and demo.
# Every target installs what it needs and skips what is already there, so a fresh Debian
# bookworm machine needs only `make demo` or `make test`.

PG_MAJOR      ?= 15
PG_CONFIG     ?= /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config
PGRX_VERSION  := 0.18.1
CACHE         := $(CURDIR)/.cache
CARGO_HOME    ?= $(HOME)/.cargo
CARGO_PGRX    := $(CARGO_HOME)/bin/cargo-pgrx
# initdb refuses root, so clusters (tests, demo) run as this OS user.
PG_OS_USER    ?= postgres
APT_PACKAGES  := postgresql-$(PG_MAJOR) postgresql-server-dev-$(PG_MAJOR) postgresql-contrib \
                 libclang-dev clang pkg-config dpkg-dev sudo python3-pip

export PG_CONFIG

.PHONY: deps apt-deps pgvector cargo-pgrx pgrx-init

deps: apt-deps pgvector cargo-pgrx pgrx-init

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "apt: installing$$missing"; \
	    $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	else echo "apt: all packages present"; fi

pgvector: apt-deps
	$(SUDO) scripts/install-pgvector.sh $(CACHE)/pgvector

cargo-pgrx:
	@if [ -x $(CARGO_PGRX) ] && $(CARGO_PGRX) pgrx --version | grep -q ' $(PGRX_VERSION)$$'; then \
	    echo "cargo-pgrx $(PGRX_VERSION): present"; \
	else cargo install cargo-pgrx --version $(PGRX_VERSION) --locked; fi

pgrx-init: cargo-pgrx apt-deps
	@if grep -qs '^pg$(PG_MAJOR) = "$(PG_CONFIG)"' $(HOME)/.pgrx/config.toml; then \
	    echo "pgrx: pg$(PG_MAJOR) already points at $(PG_CONFIG)"; \
	else cargo pgrx init --pg$(PG_MAJOR) $(PG_CONFIG); fi
