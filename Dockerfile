# CCProxy: a slim image with the compiled native modules and no build tools.
#   docker build -t ccproxy .
#   docker run -p 127.0.0.1:11434:11434 -e CCPROXY_ALLOW_UNAUTHENTICATED=on \
#              -e OPENAI_API_KEY=… -e BIG_MODEL_NAME=… -e SMALL_MODEL_NAME=… -v ccproxy-data:/data ccproxy
# Inside the container it listens on 0.0.0.0, which ccproxy refuses without client keys and a
# dashboard password (docs/security.md): publish on the host's 127.0.0.1 and say so with
# CCPROXY_ALLOW_UNAUTHENTICATED=on, or set CCPROXY_CLIENT_API_KEYS and DASHBOARD_PASSWORD.
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
# Compiles the Cython extensions (Cython comes from the build requirements).
RUN pip install --no-cache-dir --prefix=/install '.[redis,postgres]'

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 ccproxy \
    && mkdir /data && chown ccproxy /data
COPY --from=build /install /usr/local
ENV HOST=0.0.0.0 \
    PORT=11434 \
    CCPROXY_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 11434
USER ccproxy
# /health is 200 while serving and 503 while draining after SIGTERM (docker stop).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '11434')}/health\", timeout=2)"]
# docker stop sends SIGTERM: in-flight requests get CCPROXY_DRAIN_TIMEOUT (30 s) to finish.
STOPSIGNAL SIGTERM
CMD ["ccproxy"]
