# syntax=docker/dockerfile:1
# LoRA Lab: the same two set-up steps as the README (`scripts/setup assets`, then
# `scripts/setup python`), in two stages. Nothing is fetched at run time.
#
#   docker build -t loralab .                                # CPU torch (default)
#   docker build -t loralab --build-arg TORCH=cuda .         # CUDA torch from PyPI
#   docker run -p 8000:8000 loralab                          # add --gpus all for CUDA

# --- stage 1: front-end libraries from npm -> static/vendor ------------------------
# Pyodide's wheels are verified against its lock and our calculators are zipped into a
# wheel for the in-page cells: that step is Python (stdlib + `pip download`).
FROM node:20-bookworm-slim AS assets
# Debian's point releases replace package versions, so pinned versions would break the build;
# the base image's tag pins the distribution instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
COPY scripts/setup scripts/vendor-assets.mjs scripts/vendor-pyodide.py scripts/precompress.py scripts/
COPY calculators calculators
RUN PYTHON=python3 scripts/setup assets

# --- stage 2: the Python runtime ---------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime
ARG TORCH=cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LORALAB_VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
RUN groupadd --gid 10001 loralab && useradd --create-home --uid 10001 --gid 10001 loralab
WORKDIR /app
COPY --chown=loralab:loralab . .
# TORCH=cpu takes the CPU wheel (a few hundred MB); TORCH=cuda takes PyPI's CUDA build.
RUN if [ "$TORCH" = "cpu" ]; then export TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu; fi \
    && scripts/setup python \
    && rm -rf /root/.cache/pip
COPY --from=assets --chown=loralab:loralab /src/static/vendor /app/static/vendor
# Typeset the chapters' maths once, with the assets stage's Node (not kept in the image).
RUN --mount=type=bind,from=assets,source=/usr/local/bin/node,target=/usr/local/bin/node \
    LORALAB_NODE=/usr/local/bin/node loralab render-maths
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]
CMD ["loralab", "serve", "--host", "0.0.0.0", "--port", "8000"]
