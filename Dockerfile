# hulk: multi-stage image. Stage 1 builds the wheel (Rust + maturin); stage 2 is a slim runtime.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH="/root/.cargo/bin:${PATH}"
WORKDIR /src
COPY Cargo.toml pyproject.toml README.md ./
COPY rust ./rust
COPY python ./python
RUN pip install --no-cache-dir "maturin>=1.7,<2" && maturin build --release --out /wheels

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 hulk
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER hulk
WORKDIR /home/hulk
# Configuration comes from the environment (HULK_<SECTION>__<KEY>) and an optional mounted file.
ENV HULK_SERVER__HOST=0.0.0.0
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health').status == 200 else 1)"
ENTRYPOINT ["hulk"]
CMD ["serve"]
