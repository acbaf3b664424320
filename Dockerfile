# syntax=docker/dockerfile:1
# The image every pipeline step runs in: yolo-distill with exactly the dependency versions `make install` uses
# (images/requirements.lock). PyPI's torch wheels bundle CUDA, so the image runs on GPU nodes (NVIDIA runtime) and
# on CPU. Build and tag with images/build.sh; the pipeline references the tag (or digest) given at compile time.
FROM python:3.11.11-slim-bookworm

# OpenCV (through Ultralytics) needs these shared libraries even headless.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    YOLO_OFFLINE=1 \
    YOLO_CONFIG_DIR=/tmp/yolo-distill \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/yolo-distill
COPY images/requirements.lock images/requirements.lock
COPY pyproject.toml README.md ./
COPY distill ./distill
RUN pip install --constraint images/requirements.lock . \
    && python -c "import distill, distill.components.steps, distill.pipelines.pipeline"

# Any UID works (OpenShift-style random UIDs too): config and caches live under /tmp.
RUN useradd --create-home --uid 10001 yolo
USER 10001
ENTRYPOINT ["yolo-distill"]
CMD ["--help"]
