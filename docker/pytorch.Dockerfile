# lem with the PyTorch / transformers backend, on PyTorch's official CUDA runtime image.
#   docker compose build pytorch            (from the repository root; compose.yaml passes the args)
#   docker compose run --rm pytorch python -m lem.doctor gpus=[0]
#   docker compose run --rm pytorch python -m lem model=llama3-8b-random gpus=[0] precision=bf16
# BASE_IMAGE: any pytorch/pytorch:<version>-cuda<x.y>-cudnn9-runtime whose CUDA the host driver
# supports (`nvidia-smi` shows the newest it supports); torch comes from it and stays as it is.
ARG BASE_IMAGE=pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

# Stage 1: lem's wheel, built from the source tree (only the runtime stage ships).
FROM python:3.12-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY conf ./conf
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Stage 2: the engine's image plus lem, run as a user whose uid/gid match the host's (files written
# to the mounted caches and results then belong to you).
FROM ${BASE_IMAGE} AS runtime
ARG UID=1000
ARG GID=1000
ARG LEM_EXTRAS=slurm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=wheel /wheels /tmp/wheels
# The base's packages are the constraints: pip adds lem's dependencies but never swaps the torch
# the image was built around.
RUN python -m pip list --format=freeze > /tmp/base.txt \
 && python -m pip install --no-cache-dir -c /tmp/base.txt "$(ls /tmp/wheels/lem-*.whl)[${LEM_EXTRAS}]" \
 && rm -rf /tmp/wheels /tmp/base.txt
RUN groupadd --non-unique --gid "${GID}" lem \
 && useradd --non-unique --uid "${UID}" --gid "${GID}" --create-home --shell /bin/bash lem \
 && install -d -o "${UID}" -g "${GID}" /cache/huggingface /cache/lem /results
# which engine this image carries: lem's pre-flight routes other backends to their own image
ENV LEM_CONTAINER=pytorch \
    HOME=/home/lem \
    HF_HOME=/cache/huggingface \
    LEM_CACHE_DIR=/cache/lem \
    LEM_OUTPUT_ROOT=/results \
    PYTHONUNBUFFERED=1
VOLUME ["/cache/huggingface", "/cache/lem", "/results"]
WORKDIR /results
USER ${UID}:${GID}
CMD ["python", "-m", "lem.doctor"]
