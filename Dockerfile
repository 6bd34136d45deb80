# One image for both binaries. libtorch comes from the PyPI torch wheel, as on the dev machines.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/torch && /opt/torch/bin/pip install --no-cache-dir torch==2.13.0
ENV PATH=/opt/torch/bin:$PATH LIBTORCH_USE_PYTORCH=1
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 curl ca-certificates && rm -rf /var/lib/apt/lists/*
# The binaries' rpath points at the venv's torch/lib, so the venv is copied to the same path.
COPY --from=build /opt/torch /opt/torch
COPY --from=build /src/target/release/xcam /src/target/release/xcam-worker /usr/local/bin/
COPY models /opt/xcam/models
WORKDIR /opt/xcam
