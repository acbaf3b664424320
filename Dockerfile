# The image the pipeline steps run in: yolo-distill and its pinned dependencies on Python 3.11.
# The pipeline issue pins it by digest in the components; see images/README.md.
FROM python:3.11-slim

# OpenCV (via Ultralytics) needs these shared libraries even headless.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/yolo-distill
COPY pyproject.toml README.md ./
COPY distill ./distill
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-cache-dir .

# Keep Ultralytics offline and its config in a writable place whatever user the pod runs as.
ENV YOLO_OFFLINE=1 YOLO_CONFIG_DIR=/tmp/yolo-distill
ENTRYPOINT ["yolo-distill"]
