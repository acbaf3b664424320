# syntax=docker/dockerfile:1
# The image every pipeline step runs in: yolo-distill with exactly the dependency versions `make install` uses
# (images/requirements.lock). PyPI's torch wheels bundle CUDA, so the image runs on GPU nodes (NVIDIA runtime) and
# on CPU. Build and tag with images/build.sh; the pipeline references the tag (or digest) given at compile time.
#
# BASE_IMAGE: the official Python image, pinned by digest. A site without Docker Hub builds its own equivalent from
# Debian packages with images/base.sh and passes it (images/build.sh --base REF).
ARG BASE_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5
FROM ${BASE_IMAGE}

# OpenCV (through Ultralytics) needs these shared libraries even headless (images/base.sh's base has them already).
# hadolint ignore=DL3008
RUN if ! dpkg -s libgl1 libglib2.0-0 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
        && rm -rf /var/lib/apt/lists/*; \
    fi

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    YOLO_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    GIT_PYTHON_REFRESH=quiet \
    YOLO_CONFIG_DIR=/tmp/yolo-distill \
    YOLO_DISTILL_CACHE=/tmp/yolo-distill/inputs \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/yolo-distill
COPY images/requirements.lock images/requirements.lock
COPY pyproject.toml ./
# The dependencies first, in their own layer: a change to the code alone rebuilds in seconds, not minutes.
# The optional build secret `ca` is an extra CA bundle for pip (a TLS-inspecting proxy between the build and the
# package index); it is mounted for this step only and never stored in a layer.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/dependencies.txt \
    && pip install --constraint images/requirements.lock --requirement /tmp/dependencies.txt \
    && rm /tmp/dependencies.txt
COPY README.md ./
COPY distill ./distill
COPY components ./components
COPY pipelines ./pipelines
# Installed as a package (the top-level components/ and pipelines/ become distill.components and distill.pipelines),
# then the source tree goes: left in the working directory it would shadow the installed package for every
# `python -m` or `python -c` run here (the working directory comes first on sys.path) and lacks those two packages.
RUN pip install --no-deps --no-build-isolation . \
    && rm -rf distill components pipelines build ./*.egg-info \
    && python -c "import distill, distill.components.steps, distill.pipelines.pipeline"

# Any UID works (OpenShift-style random UIDs too): config, caches and the input cache live under /tmp (a pod's
# writable emptyDir or the run's cache volume), the home is never written, so a read-only root filesystem works.
RUN useradd --create-home --uid 10001 yolo
USER 10001
ENTRYPOINT ["yolo-distill"]
CMD ["--help"]
