# hulk: multi-stage image. Stage 1 builds the wheel (Rust + maturin) on Debian bookworm, whose
# python3 is 3.11 like the runtime image; stage 2 is a slim runtime with a non-root user.
FROM rust:1-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir "maturin>=1.7,<2"
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY rust ./rust
COPY python ./python
RUN /opt/build/bin/maturin build --release --interpreter python3 --out /wheels

FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 hulk
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER hulk
WORKDIR /home/hulk
# Configuration: HULK_<SECTION>__<KEY> variables, and/or a file mounted at $HULK_CONFIG.
ENV HULK_SERVER__HOST=0.0.0.0
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health').status != 200)"
ENTRYPOINT ["hulk"]
CMD ["serve"]
