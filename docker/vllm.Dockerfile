# lem with the vLLM backend, on vLLM's official image (vllm/vllm-openai).
#   docker compose build vllm               (from the repository root; compose.yaml passes the args)
#   docker compose run --rm vllm python -m lem.doctor backend=vllm gpus=[0]
#   docker compose run --rm vllm python -m lem backend=vllm model=llama3-8b-random gpus=[0]
# vLLM's workers talk through /dev/shm: run it with ipc: host or a large shm_size (compose.yaml
# does), never Docker's 64 MB default. BASE_IMAGE: a vllm/vllm-openai:v<version> tag; lem is
# tested against vLLM 0.32 (pyproject's vllm extra).
ARG BASE_IMAGE=vllm/vllm-openai:v0.32.0

# Stage 1: lem's wheel, built from the source tree (only the runtime stage ships).
FROM python:3.12-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY conf ./conf
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Stage 2: vLLM's image plus lem, run as a user whose uid/gid match the host's.
FROM ${BASE_IMAGE} AS runtime
ARG UID=1000
ARG GID=1000
ARG LEM_EXTRAS=slurm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=wheel /wheels /tmp/wheels
# vLLM pins its torch and transformers: they are the constraints, pip only adds what lem lacks.
RUN python3 -m pip list --format=freeze > /tmp/base.txt \
 && python3 -m pip install --no-cache-dir -c /tmp/base.txt "$(ls /tmp/wheels/lem-*.whl)[${LEM_EXTRAS}]" \
 && rm -rf /tmp/wheels /tmp/base.txt \
 && if ! command -v python > /dev/null; then ln -s "$(command -v python3)" /usr/local/bin/python; fi
RUN groupadd --non-unique --gid "${GID}" lem \
 && useradd --non-unique --uid "${UID}" --gid "${GID}" --create-home --shell /bin/bash lem \
 && install -d -o "${UID}" -g "${GID}" /cache/huggingface /cache/lem /results
# which engine this image carries: lem's pre-flight routes other backends to their own image
ENV LEM_CONTAINER=vllm \
    HOME=/home/lem \
    HF_HOME=/cache/huggingface \
    LEM_CACHE_DIR=/cache/lem \
    LEM_OUTPUT_ROOT=/results \
    PYTHONUNBUFFERED=1
VOLUME ["/cache/huggingface", "/cache/lem", "/results"]
WORKDIR /results
USER ${UID}:${GID}
# the base image starts vLLM's API server; lem runs the engine in-process instead
ENTRYPOINT []
CMD ["python", "-m", "lem.doctor", "backend=vllm"]
