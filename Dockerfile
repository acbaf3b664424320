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
    YOLO_CONFIG_DIR=/tmp/yolo-distill \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/yolo-distill
COPY images/requirements.lock images/requirements.lock
COPY pyproject.toml README.md ./
COPY distill ./distill
# The optional build secret `ca` is an extra CA bundle for pip (a TLS-inspecting proxy between the build and the
# package index); it is mounted for this step only and never stored in a layer.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && pip install --constraint images/requirements.lock . \
    && python -c "import distill, distill.components.steps, distill.pipelines.pipeline"

# Any UID works (OpenShift-style random UIDs too): config and caches live under /tmp, the home is not written.
RUN useradd --create-home --uid 10001 yolo
USER 10001
ENTRYPOINT ["yolo-distill"]
CMD ["--help"]
