# spcs-whisper: `make run` installs and starts the service; `make test` installs and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# CPU build of torch for the local/CI path (an unpinned torch pulls a multi-GB CUDA build).
TORCH  ?= torch==2.13.0
# Speaker labels read only the weights inside this wheel (service/inference/speaker_encoder.py): its librosa and
# webrtcvad dependencies are not needed, so it installs without them.
RESEMBLYZER ?= resemblyzer==0.1.4
# The versions the tests ran with, shared with the images (refresh: docker/freeze_constraints.py).
CONSTRAINTS := -c docker/constraints.txt

.PHONY: run install install-test browser test test-unit test-integration lint bench bench-scale gpu-check cluster clean

$(VENV)/.installed: pyproject.toml docker/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q $(CONSTRAINTS) -e '.[inference,snowflake]'
	$(PIP) install -q --no-deps $(RESEMBLYZER)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q $(CONSTRAINTS) -e '.[inference,snowflake,test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Headless Chromium + ChromeDriver for the web page's browser test (Debian packages; needs root or sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian chromium + chromium-driver for the browser test"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q chromium chromium-driver >/dev/null || \
	  { $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -q >/dev/null && \
	    $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q chromium chromium-driver >/dev/null; }; }

run: install
	$(VENV)/bin/spcs-whisper serve

lint: install-test
	$(VENV)/bin/ruff check service tests bench deploy docker
	$(VENV)/bin/ruff format --check service tests bench deploy docker
	$(VENV)/bin/mypy

test: install-test browser lint
	$(PY) -m pytest -q

test-unit: install-test
	$(PY) -m pytest -q tests/unit tests/inference tests/api tests/storage

bench: install-test
	$(PY) -m bench.run

# Throughput of a stage batch on the local cluster with 1, 2 and 4 stand-in GPU workers, and the scaling
# efficiency; every process it starts is stopped at the end (Ctrl-C too). Flags: BENCH_SCALE_ARGS='--workers 1,2'.
BENCH_SCALE_ARGS ?=
bench-scale: install-test
	$(PY) -m bench.scale $(BENCH_SCALE_ARGS)

# On a machine with an NVIDIA GPU: a venv of its own (.venv-gpu, ignored by git; .venv keeps its CPU torch) with
# PyPI's CUDA build of torch, then bench/gpu_check.py within 8 minutes: both engines at batch sizes 1-64 and the
# whole service on the GPU, into bench/results/gpu-check.json (docs/benchmarks.md, "## GPU"). Refused without
# nvidia-smi. torch comes from GPU_INDEX with this machine's pip configuration set aside (a find-links folder or a
# local index may hold the +cpu wheel, which satisfies torch==X too), with its dependencies: the nvidia-* and
# cuda-toolkit wheels hold the CUDA libraries it loads. nvidia-cublas-cu12: CUDA 12's cuBLAS, which PyPI's
# ctranslate2 loads and the CUDA 13 torch does not bring. Flags: GPU_CHECK_ARGS='--no-doc'.
GPU_VENV   ?= .venv-gpu
GPU_PY     := $(GPU_VENV)/bin/python
GPU_INDEX  ?= https://pypi.org/simple
GPU_TORCH  ?= $(TORCH)
GPU_CUBLAS ?= nvidia-cublas-cu12>=12.4,<13
GPU_CHECK_ARGS ?=
GPU_PIP_REGISTRY := env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_NO_INDEX -u PIP_CONSTRAINT \
	PIP_CONFIG_FILE=/dev/null $(GPU_PY) -m pip

$(GPU_VENV)/.installed: pyproject.toml docker/constraints.txt
	$(PYTHON) -m venv $(GPU_VENV)
	echo '*' > $(GPU_VENV)/.gitignore
	$(GPU_PY) -m pip install -q --upgrade pip
	$(GPU_PY) -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null || \
	  $(GPU_PY) -m pip uninstall -q -y torch
	$(GPU_PIP_REGISTRY) install -q --index-url $(GPU_INDEX) $(CONSTRAINTS) "$(GPU_TORCH)" "$(GPU_CUBLAS)"
	$(GPU_PY) -m pip install -q $(CONSTRAINTS) -e '.[inference,snowflake,test]'
	$(GPU_PY) -c "import torch; assert torch.version.cuda, f'torch {torch.__version__} is not a CUDA build'"
	touch $@

gpu-check:
	@command -v nvidia-smi >/dev/null || { echo "gpu-check: no nvidia-smi here: run it on a machine with an NVIDIA GPU" \
	  "(python -m bench.gpu_check --cpu-dry-run tries the script on the CPU)" >&2; exit 2; }
	$(MAKE) $(GPU_VENV)/.installed
	timeout -k 120 480 $(GPU_PY) -m bench.gpu_check $(GPU_CHECK_ARGS)

# A Ray head and two worker nodes (one logical GPU each) as separate processes, as in SPCS, then the Ray
# Serve app and the gateway against them; Ctrl-C stops everything.
cluster: install-test
	$(PY) -m tests.cluster

clean:
	rm -rf $(VENV) .venv-gpu data .pytest_cache

# =====================================================================================================
# Deployment (Snowflake CLI) to Snowpark Container Services. Every name and size comes from
# deploy/config.yaml, read through `python -m deploy.render --get KEY`; none is repeated here.
#   make images deploy      build both images; then roles, tables, stages, image repository, compute pools,
#                           push, specs, services, SQL functions and grants (sql/README.md has the order)
#   make upgrade            after `make render` or `make push`: upload the specs and restart the services
#   make status | logs [WHICH=gateway|head|worker INSTANCE=0] | teardown [DROP_DATA=1] | render
# Needs the Snowflake CLI (`snow`, connection flags in SNOW_FLAGS, e.g. SNOW_FLAGS='-c prod') and docker.
# `make deploy` also needs SPCS_WHISPER_API_TOKEN in the environment: the gateway's bearer token, stored
# in a Snowflake secret when that secret is first created (read from the environment, never a command-line
# argument), and snowflake.cloud of deploy/config.yaml must be the account's cloud. `make -n deploy` prints every step.
# Run without -j: the deploy steps are ordered prerequisites.
# =====================================================================================================
.PHONY: images push deploy deploy-objects deploy-services upgrade status logs teardown render render-check

DEPLOY_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
SNOW      ?= snow
SNOW_FLAGS ?=
DOCKER    ?= docker
WHICH     ?= gateway
INSTANCE  ?= 0
LINES     ?= 200
DROP_DATA ?= 0

# A value of deploy/config.yaml. Each variable below is looked up on first use and then kept
# (`X = $(eval X := ...)$(X)`), so targets outside this section never run these lookups.
cfg = $(shell $(DEPLOY_PY) -m deploy.render --get $(1))
DATABASE      = $(eval DATABASE := $(call cfg,snowflake.database))$(DATABASE)
SCHEMA        = $(eval SCHEMA := $(call cfg,snowflake.schema))$(SCHEMA)
WAREHOUSE     = $(eval WAREHOUSE := $(call cfg,snowflake.warehouse))$(WAREHOUSE)
DEPLOYER      = $(eval DEPLOYER := $(call cfg,roles.deployer))$(DEPLOYER)
IMAGE_REPO    = $(eval IMAGE_REPO := $(call cfg,image_repository))$(IMAGE_REPO)
SPEC_STAGE    = $(eval SPEC_STAGE := $(call cfg,spec_stage))$(SPEC_STAGE)
GATEWAY       = $(eval GATEWAY := $(call cfg,services.gateway.name))$(GATEWAY)
SERVICES      = $(eval SERVICES := $(foreach s,head worker gateway,$(call cfg,services.$(s).name)))$(SERVICES)
GATEWAY_IMAGE = $(eval GATEWAY_IMAGE := $(call cfg,images.gateway.name):$(call cfg,images.gateway.tag))$(GATEWAY_IMAGE)
RAY_IMAGE     = $(eval RAY_IMAGE := $(call cfg,images.ray.name):$(call cfg,images.ray.tag))$(RAY_IMAGE)
EXTERNAL_ACCESS = $(eval EXTERNAL_ACCESS := $(call cfg,external_access.enabled))$(EXTERNAL_ACCESS)
SQL_VARS      = $(eval SQL_VARS := $(shell $(DEPLOY_PY) -m deploy.render --sql-vars))$(SQL_VARS)
SPEC_FILES    = $(sort $(wildcard spec/*.yaml))
# The deployer role in the service's database and schema: the context of every script but 00 and 06.
SNOW_CTX      = $(SNOW_FLAGS) --role $(DEPLOYER) --database $(DATABASE) --schema $(SCHEMA) --warehouse $(WAREHOUSE)

render:
	$(DEPLOY_PY) -m deploy.render

render-check:
	$(DEPLOY_PY) -m deploy.render --check

# SPCS runs linux/amd64 images.
images:
	$(DOCKER) build --platform linux/amd64 -f $(call cfg,images.gateway.dockerfile) -t $(GATEWAY_IMAGE) .
	$(DOCKER) build --platform linux/amd64 -f $(call cfg,images.ray.dockerfile) -t $(RAY_IMAGE) .

# Needs the image repository (sql/04_image_repository.sql, part of `make deploy`).
push:
	$(SNOW) spcs image-registry login $(SNOW_CTX)
	repo=$$($(SNOW) spcs image-repository url $(IMAGE_REPO) $(SNOW_CTX)) && \
	for image in $(GATEWAY_IMAGE) $(RAY_IMAGE); do \
	  $(DOCKER) tag $$image $$repo/$$image && $(DOCKER) push $$repo/$$image || exit 1; \
	done

deploy: render-check deploy-objects push deploy-services

# First the account's cloud: GPU instance families differ by cloud (GPU_NV_S is AWS only), so deploy.cloud stops here
# unless CURRENT_REGION() is on snowflake.cloud of deploy/config.yaml; and the API token (needed by deploy-services).
# Then roles, warehouse, database (admin role, inside 00), then the deployer's objects. 06 only with external access.
deploy-objects:
	$(SNOW) sql $(SNOW_FLAGS) -q "SELECT CURRENT_REGION() AS REGION" --format json | $(DEPLOY_PY) -m deploy.cloud
	$(DEPLOY_PY) -m deploy.render --check-secrets
	$(SNOW) sql $(SNOW_FLAGS) -f sql/00_setup.sql $(SQL_VARS)
	$(SNOW) sql $(SNOW_CTX) -f sql/01_tables.sql
	$(SNOW) sql $(SNOW_CTX) -f sql/02_stages.sql
	$(SNOW) sql $(SNOW_CTX) -f sql/04_image_repository.sql $(SQL_VARS)
	$(SNOW) sql $(SNOW_CTX) -f sql/05_compute_pools.sql $(SQL_VARS)
	if [ "$(EXTERNAL_ACCESS)" = true ]; then $(SNOW) sql $(SNOW_FLAGS) -f sql/06_external_access.sql $(SQL_VARS); fi

# Secrets: deploy.render fills sql/07_secrets.sql with $SPCS_WHISPER_API_TOKEN and a random Ray token and snow reads
# it from stdin, so no value is ever a command-line argument (process list, shell history); the output, which shows
# the statements, is discarded. Then specs to the stage, services, the SQL functions (bound to the gateway), grants.
deploy-services: render-check
	$(DEPLOY_PY) -m deploy.render --check-secrets
	$(DEPLOY_PY) -m deploy.render --secrets-sql | $(SNOW) sql $(SNOW_CTX) --stdin --enable-templating NONE >/dev/null
	for f in $(SPEC_FILES); do $(SNOW) stage copy $$f @$(SPEC_STAGE) --overwrite $(SNOW_CTX) || exit 1; done
	$(SNOW) sql $(SNOW_CTX) -f sql/07_services.sql $(SQL_VARS)
	if [ "$(EXTERNAL_ACCESS)" = true ]; then $(SNOW) sql $(SNOW_CTX) -f sql/07_worker_external_access.sql $(SQL_VARS); fi
	$(SNOW) sql $(SNOW_CTX) -f sql/03_service_functions.sql
	$(SNOW) sql $(SNOW_CTX) -f sql/08_grants.sql $(SQL_VARS)
	$(SNOW) sql $(SNOW_FLAGS) -f sql/10_row_access.sql $(SQL_VARS)

upgrade: render-check
	for f in $(SPEC_FILES); do $(SNOW) stage copy $$f @$(SPEC_STAGE) --overwrite $(SNOW_CTX) || exit 1; done
	$(SNOW) sql $(SNOW_CTX) -f sql/09_upgrade_services.sql $(SQL_VARS)

status:
	for s in $(SERVICES); do $(SNOW) spcs service list-containers $$s $(SNOW_CTX) || exit 1; done
	$(SNOW) sql $(SNOW_CTX) -q "SHOW ENDPOINTS IN SERVICE $(GATEWAY)"

logs:
	$(SNOW) spcs service logs $(call cfg,services.$(WHICH).name) --container-name $(call cfg,services.$(WHICH).container) \
	  --instance-id $(INSTANCE) --num-lines $(LINES) $(SNOW_CTX)

# Stop every credit, in an order that loses nothing (`make -n teardown` prints it): drain the gateway
# (WHISPER_DRAIN: running jobs finish, everything is exported to the tables), drop the functions, the Ray
# services and the GPU pool, then the gateway with its block volume (DROP SERVICE ... FORCE: Snowflake refuses
# to drop a service with a block volume without it) and the CPU pool. Each step runs on its own and a failed
# one is noted, never the end: the pools are dropped even when a service drop fails, and `make teardown` exits
# non-zero at the end, naming the steps that failed. A gateway that did not drain keeps its block volume (and
# the CPU pool it runs on) unless FORCE=1. https://docs.snowflake.com/en/sql-reference/sql/drop-service
TEARDOWN_DIR ?= .teardown
DRAIN_S      ?= 120
FORCE        ?= 0
HEAD          = $(eval HEAD := $(call cfg,services.head.name))$(HEAD)
WORKER        = $(eval WORKER := $(call cfg,services.worker.name))$(WORKER)
CPU_POOL      = $(eval CPU_POOL := $(call cfg,compute_pools.cpu.name))$(CPU_POOL)
GPU_POOL      = $(eval GPU_POOL := $(call cfg,compute_pools.gpu.name))$(GPU_POOL)
FAILED        = $(TEARDOWN_DIR)/failed

teardown:
	rm -rf $(TEARDOWN_DIR) && mkdir -p $(TEARDOWN_DIR)
	$(SNOW) sql $(SNOW_CTX) --format json -q "SELECT WHISPER_DRAIN($(DRAIN_S)) AS DRAIN" | $(DEPLOY_PY) -m deploy.drained && touch $(TEARDOWN_DIR)/drained || echo "drain the gateway" >> $(FAILED)
	$(SNOW) sql $(SNOW_CTX) -q "DROP FUNCTION IF EXISTS TRANSCRIBE(VARCHAR, VARCHAR)" || echo "drop TRANSCRIBE(VARCHAR, VARCHAR)" >> $(FAILED)
	$(SNOW) sql $(SNOW_CTX) -q "DROP FUNCTION IF EXISTS TRANSCRIBE(VARCHAR)" || echo "drop TRANSCRIBE(VARCHAR)" >> $(FAILED)
	$(SNOW) sql $(SNOW_CTX) -q "DROP FUNCTION IF EXISTS TRANSCRIBE(VARCHAR, OBJECT)" || echo "drop TRANSCRIBE(VARCHAR, OBJECT)" >> $(FAILED)
	$(SNOW) sql $(SNOW_CTX) -q "DROP FUNCTION IF EXISTS TRANSCRIBE_SUBMIT(VARCHAR, VARCHAR, VARCHAR)" || echo "drop TRANSCRIBE_SUBMIT" >> $(FAILED)
	$(SNOW) sql $(SNOW_CTX) -q "DROP FUNCTION IF EXISTS TRANSCRIBE_SUBMIT(VARCHAR, OBJECT)" || echo "drop TRANSCRIBE_SUBMIT(VARCHAR, OBJECT)" >> $(FAILED)
	$(SNOW) sql $(SNOW_CTX) -q "DROP FUNCTION IF EXISTS TRANSCRIPTION_STATUS(VARCHAR)" || echo "drop TRANSCRIPTION_STATUS" >> $(FAILED)
	$(SNOW) sql $(SNOW_CTX) -q "DROP FUNCTION IF EXISTS WHISPER_DRAIN(NUMBER)" || echo "drop WHISPER_DRAIN" >> $(FAILED)
	$(SNOW) sql $(SNOW_CTX) -q "DROP SERVICE IF EXISTS $(WORKER)" || echo "drop $(WORKER)" >> $(FAILED)
	$(SNOW) sql $(SNOW_CTX) -q "DROP SERVICE IF EXISTS $(HEAD)" || echo "drop $(HEAD)" >> $(FAILED)
	$(SNOW) sql $(SNOW_CTX) -q "ALTER COMPUTE POOL IF EXISTS $(GPU_POOL) STOP ALL" || echo "stop $(GPU_POOL)" >> $(FAILED)
	$(SNOW) sql $(SNOW_CTX) -q "DROP COMPUTE POOL IF EXISTS $(GPU_POOL)" || echo "drop $(GPU_POOL)" >> $(FAILED)
	if [ -e $(TEARDOWN_DIR)/drained ] || [ "$(FORCE)" = 1 ]; then \
	  $(SNOW) sql $(SNOW_CTX) -q "DROP SERVICE IF EXISTS $(GATEWAY) FORCE" || echo "drop $(GATEWAY)" >> $(FAILED); \
	  $(SNOW) sql $(SNOW_CTX) -q "ALTER COMPUTE POOL IF EXISTS $(CPU_POOL) STOP ALL" || echo "stop $(CPU_POOL)" >> $(FAILED); \
	  $(SNOW) sql $(SNOW_CTX) -q "DROP COMPUTE POOL IF EXISTS $(CPU_POOL)" || echo "drop $(CPU_POOL)" >> $(FAILED); \
	else \
	  echo "kept $(GATEWAY) and $(CPU_POOL): the gateway did not drain, and its block volume holds work not yet in the tables; make teardown FORCE=1 drops them anyway" >&2; \
	  echo "drop $(GATEWAY) (not drained)" >> $(FAILED); \
	fi
	if [ "$(DROP_DATA)" = 1 ]; then $(SNOW) sql $(SNOW_CTX) -f sql/99_teardown_data.sql $(SQL_VARS) || echo "drop data" >> $(FAILED); fi
	@if [ -s $(FAILED) ]; then echo "teardown: these steps failed:" >&2; cat $(FAILED) >&2; exit 1; fi
