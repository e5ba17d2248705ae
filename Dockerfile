# User code image of ml_platform: the Dagster code location `ml_platform.definitions`, served by
# `dagster code-server start` on port 4000. Two variants, chosen by the VARIANT build arg:
#
#   docker build --build-arg VARIANT=cpu  -t ml-platform:cpu  .   # torch CPU wheel (default)
#   docker build --build-arg VARIANT=cuda -t ml-platform:cuda .   # torch CUDA wheel
#
# Both variants use the same python base: the CUDA torch wheel brings the CUDA runtime, cuBLAS and
# cuDNN as nvidia-* wheels, so only the host's NVIDIA driver (NVIDIA container toolkit / device
# plugin) is needed and no nvidia/cuda base image is. See deploy/README.md, section "Image".
#
# Base images are pinned by exact version tag. Production pins the digest too
# (python:3.11.14-slim-bookworm@sha256:<digest>); this sandbox cannot reach a registry to read it.
# No secrets at build time: every setting (MLP_*, DAGSTER_HOME, database credentials) is runtime env.

ARG VARIANT=cpu

# --- builder: a venv with torch of the variant, ml_platform and its pinned dependencies --------
FROM python:3.11.14-slim-bookworm AS builder

ARG VARIANT
# Must match the torch pin in constraints.txt (the tests check it).
ARG TORCH_VERSION=2.13.0
# Empty: cpu -> the PyTorch CPU index, cuda -> PyPI (its Linux x86_64 torch wheel is the CUDA
# build). Set e.g. https://download.pytorch.org/whl/cu128 to choose another CUDA version.
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# torch alone first (as `make install` does), from the index of the variant, in its own layer:
# it is the biggest one and changes least. Its dependencies are resolved below, under constraints.
RUN set -eu; \
    case "${VARIANT}" in \
      cpu) index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" ;; \
      cuda) index="${TORCH_INDEX_URL:-https://pypi.org/simple}" ;; \
      *) echo "VARIANT must be cpu or cuda, not '${VARIANT}'" >&2; exit 1 ;; \
    esac; \
    pip install --no-deps --index-url "${index}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY ml_platform ./ml_platform

# The package (not editable, no dev extras) with the known-good set of constraints.txt. The torch
# installed above satisfies torch==${TORCH_VERSION}, so pip keeps it and only adds its dependencies.
# The last command fails the build if the variant's torch was replaced by another build.
RUN pip install -c constraints.txt . "torch==${TORCH_VERSION}" \
 && pip check \
 && python -c "import sys, torch; cuda = torch.version.cuda is not None; sys.exit(0 if cuda == (sys.argv[1] == 'cuda') else f'torch {torch.__version__} is not the {sys.argv[1]} build')" "${VARIANT}"

# --- runtime: the venv (ml_platform is installed in it) and a non-root user -------------------
FROM python:3.11.14-slim-bookworm AS runtime

ARG VARIANT
# Commit recorded in lineage (MLP_GIT_COMMIT): the image has no .git. Pass --build-arg GIT_COMMIT=$(git rev-parse HEAD).
ARG GIT_COMMIT=""

LABEL org.opencontainers.image.title="ml-platform" \
      org.opencontainers.image.description="ml_platform Dagster code location (user code)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      ml-platform.variant="${VARIANT}"

# Fixed UID/GID 10001 (numeric USER below, so Kubernetes' runAsNonRoot can verify it). Only the
# working directory and DAGSTER_HOME are writable by it; the venv stays owned by root.
RUN groupadd --gid 10001 mlp \
 && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /opt/dagster --shell /usr/sbin/nologin mlp \
 && mkdir -p /opt/dagster/app /opt/dagster/dagster_home \
 && chown -R 10001:10001 /opt/dagster

COPY --from=builder /opt/venv /opt/venv

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    MLP_ROOT_DIR=/opt/dagster/app \
    MLP_GIT_COMMIT=${GIT_COMMIT}

WORKDIR /opt/dagster/app
USER 10001:10001

EXPOSE 4000

# For `docker run`; Kubernetes ignores HEALTHCHECK, and the Dagster Helm chart's readiness probe
# runs the same command against the deployment's port.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]

# No ENTRYPOINT: the Helm chart and the K8sRunLauncher replace the command (code server, runs).
# The code server handles SIGTERM itself, so it can run as PID 1.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "ml_platform.definitions", "--location-name", "ml_platform"]
