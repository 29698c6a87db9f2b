# The Ray image: Ray head and GPU workers both run it; the SPCS spec picks the command, e.g.
#   head:   ray start --head --port=6379 ... && spcs-whisper ray-app
#   worker: ray start --address=<head-dns>:6379 --block
#   docker build -f docker/ray.Dockerfile -t spcs-whisper-ray .      (context: the repo root)
#
# Base: nvidia/cuda's `base` flavour (CUDA runtime + the NVIDIA_* variables the container toolkit reads), not
# `runtime`/`cudnn-runtime` nor rayproject/ray: the torch CUDA wheel already brings cuBLAS, cuDNN and NCCL as
# nvidia-* wheels, so a fuller base would ship a second copy of them (GBs more for every GPU node to pull);
# rayproject/ray carries Anaconda and its own Ray that would have to match ours. CUDA 12.8 matches the torch
# build below; ctranslate2 4.x (faster-whisper) needs CUDA 12's libcublas.so.12, found via LD_LIBRARY_PATH.
# Ubuntu 22.04 has no maintained Python 3.11, so uv installs a python-build-standalone CPython (self-contained,
# relocatable) of the same patch release as the gateway image.
#
# No model weights are baked in except the small offline defaults that the `inference` extra itself installs
# (tiny.en, base): production checkpoints are folders on a stage mount (SPCS_WHISPER_MODEL=/stages/models/...).
# FFmpeg is not installed: PyAV's wheel bundles its own libav* (site-packages/av.libs), which is all the
# decoder uses.
# Ray's object store lives in /dev/shm, which container runtimes keep small (Docker: 64 MB): mount a `memory`
# volume at /dev/shm in the SPCS spec (`docker run --shm-size=...` locally), else Ray falls back to slow /tmp.

ARG PYTHON_VERSION=3.11.14

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

FROM nvidia/cuda:12.8.1-base-ubuntu22.04 AS build
ARG PYTHON_VERSION
# The torch release the tests ran with (Makefile TORCH) and its CUDA 12.8 build. ctranslate2 needs CUDA 12:
# keep TORCH_CUDA a cu12x variant that the PyTorch index serves for TORCH_VERSION.
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128

COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
# The pinned uv fixes where the interpreter comes from; the venv uses that interpreter's bundled pip.
RUN uv python install "${PYTHON_VERSION}" \
    && "$(uv python find "${PYTHON_VERSION}")" -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app

COPY docker/constraints.txt /tmp/constraints.txt
# torch alone first (the biggest layer, it changes least). The local version label (+cu128) only exists on the
# PyTorch index, so pip cannot take PyPI's build; PyPI stays the main index for everything else, pinned by the
# constraints (which leave torch, nvidia-* and triton to torch's own exact requirements).
RUN pip install --no-cache-dir -c /tmp/constraints.txt \
        --extra-index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
        "torch==${TORCH_VERSION}+${TORCH_CUDA}"

# Then the dependencies, from the project's metadata alone (an empty spcs-whisper, removed right after), so
# this layer survives code changes too.
COPY pyproject.toml README.md ./
RUN pip install --no-cache-dir -c /tmp/constraints.txt ".[inference,snowflake]" \
    && pip uninstall --yes spcs-whisper \
    && rm -rf build
# The speaker encoder's weights (SPEAKER_MODEL=resemblyzer): only the wheel's pretrained.pt is read
# (service/inference/speaker_encoder.py), so its librosa/webrtcvad dependencies are left out.
RUN pip install --no-cache-dir --no-deps -c /tmp/constraints.txt "resemblyzer==0.1.4"

# The code, installed editable like in the gateway image (snowflake_ops.py reads ../../sql/01_tables.sql from
# the source tree); bytecode compiled here because the runtime user cannot write to /app.
COPY service/ service/
COPY sql/ sql/
RUN pip install --no-cache-dir --no-deps -c /tmp/constraints.txt -e . \
    && python -m compileall -q service


FROM nvidia/cuda:12.8.1-base-ubuntu22.04

# Fixed UID/GID 1000, so SPCS volume mounts can grant it (uid/gid on the volume). Ray writes to ~/.ray and
# /tmp/ray, hence a real home. /models-cache: HF_HOME below.
RUN groupadd --gid 1000 whisper \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash whisper \
    && mkdir -p /data /models-cache \
    && chown whisper:whisper /data /models-cache

# The venv's interpreter links into /opt/python and the editable install points at /app: same paths as built.
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app

# LD_LIBRARY_PATH: ctranslate2 dlopens libcublas.so.12 (and cuDNN when it uses it) by name; the copies the torch
# wheel installed are the only ones in this image (the base image's own entries are kept after them).
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib:/usr/local/nvidia/lib:/usr/local/nvidia/lib64 \
    PYTHONUNBUFFERED=1 \
    SPCS_WHISPER_DATA_DIR=/data \
    SPCS_WHISPER_SERVE_HOST=0.0.0.0 \
    HF_HOME=/models-cache \
    RAY_USAGE_STATS_ENABLED=0
# SERVE_HOST: the gateway (another SPCS service) calls Ray Serve's HTTP proxy, so it listens on every interface.
# HF_HOME: a writable hub cache for when an External Access Integration gives egress; without one the spec sets
# HF_HUB_OFFLINE=1 (the image leaves that choice to it). RAY_USAGE_STATS_ENABLED=0: SPCS has no egress for it.

# Fail the build, not the first GPU job, if the CUDA libraries ctranslate2 loads by name are not where
# LD_LIBRARY_PATH says (loading them needs no GPU).
RUN python -c "import ctypes; ctypes.CDLL('libcublas.so.12')"

WORKDIR /app
USER 1000:1000
# 6379 Ray GCS (workers join here), 8265 Ray dashboard / job API, 8000 Ray Serve HTTP (the gateway's SERVE_URL).
EXPOSE 6379 8265 8000
# No HEALTHCHECK: SPCS ignores it and uses the readinessProbe of the service spec instead.
CMD ["spcs-whisper", "ray-app"]
