# One image for the API and the workers. The GPU worker builds it with
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (see docker-compose.yml).
FROM python:3.11-slim
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
WORKDIR /app
# torch first, pinned, from the chosen index; the project then installs against that pin.
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
COPY . .
# Editable, so the backend finds frontend/ and migrations/ beside the code, as in a checkout.
RUN pip install -e '.[worker]'
# /app/var/runs and /data exist in the image, owned by the user, so that the named volumes
# docker-compose mounts there start with that owner (a volume on a path the image lacks is root's).
RUN useradd --create-home slimpipe && mkdir -p /app/var/runs /data /app/worker/codecs/__pycache__ \
    && chown -R slimpipe /app/var /data /app/worker/codecs/__pycache__
USER slimpipe
# The numba codec kernels compiled into the image: a worker's processes load them instead of compiling
# at their first step (~30 s of CPU each). numba reads a cache folder only where it can also write, hence
# the folder's owner. A host whose CPU differs from the build machine's compiles again, once per container.
RUN python -m worker.codecs.precompile
EXPOSE 8000
CMD ["slimpipe", "serve", "--host", "0.0.0.0", "--no-worker"]
