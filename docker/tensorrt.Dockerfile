# lem with the TensorRT-LLM backend, on NVIDIA's TensorRT-LLM release image (NGC).
#   docker compose build tensorrt           (from the repository root; compose.yaml passes the args)
#   docker compose run --rm tensorrt python -m lem.doctor backend=tensorrt gpus=[0]
#   docker compose run --rm tensorrt python -m lem backend=tensorrt model=llama3-8b-random gpus=[0]
# Built engines are cached in /cache/tensorrt-llm (a volume: an engine is built once per shape).
# TensorRT-LLM runs MPI workers: ipc: host and unlimited memlock (compose.yaml sets both).
# BASE_IMAGE: an nvcr.io/nvidia/tensorrt-llm/release:<version> tag; GPUs of Ampere or newer.
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt-llm/release:1.2.1

# Stage 1: lem's wheel, built from the source tree (only the runtime stage ships).
FROM python:3.12-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY conf ./conf
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Stage 2: TensorRT-LLM's image plus lem, run as a user whose uid/gid match the host's.
FROM ${BASE_IMAGE} AS runtime
ARG UID=1000
ARG GID=1000
ARG LEM_EXTRAS=slurm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=wheel /wheels /tmp/wheels
# TensorRT-LLM pins torch, transformers and CUDA libraries: they are the constraints.
RUN python3 -m pip list --format=freeze > /tmp/base.txt \
 && python3 -m pip install --no-cache-dir -c /tmp/base.txt "$(ls /tmp/wheels/lem-*.whl)[${LEM_EXTRAS}]" \
 && rm -rf /tmp/wheels /tmp/base.txt \
 && if ! command -v python > /dev/null; then ln -s "$(command -v python3)" /usr/local/bin/python; fi
RUN groupadd --non-unique --gid "${GID}" lem \
 && useradd --non-unique --uid "${UID}" --gid "${GID}" --create-home --shell /bin/bash lem \
 && install -d -o "${UID}" -g "${GID}" /cache/huggingface /cache/lem /cache/tensorrt-llm /results
# which engine this image carries: lem's pre-flight routes other backends to their own image
ENV LEM_CONTAINER=tensorrt \
    HOME=/home/lem \
    HF_HOME=/cache/huggingface \
    LEM_CACHE_DIR=/cache/lem \
    LEM_ENGINE_CACHE_DIR=/cache/tensorrt-llm \
    LEM_OUTPUT_ROOT=/results \
    PYTHONUNBUFFERED=1
VOLUME ["/cache/huggingface", "/cache/lem", "/cache/tensorrt-llm", "/results"]
WORKDIR /results
USER ${UID}:${GID}
CMD ["python", "-m", "lem.doctor", "backend=tensorrt"]
