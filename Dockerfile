# syntax=docker/dockerfile:1
# Switchyard in a container: `docker compose up` runs the seed topology from
# docker/switchyard.toml (see compose.yaml); `docker run IMAGE tunnel remote ...` runs any
# other role. The build stage is docker/build.sh, which CI also runs (tests/all.sh, stage
# `docker`), so what is built here is what the tests built.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN bash docker/build.sh /out

# Debian's slim image: the glibc the binary was linked against, and nothing else it needs.
FROM debian:bookworm-slim
RUN useradd --system --no-create-home --shell /usr/sbin/nologin switchyard
COPY --from=build /out/switchyard /usr/local/bin/switchyard
COPY docker/switchyard.toml /etc/switchyard/switchyard.toml
USER switchyard
# Switchyard stops gracefully on SIGINT (Ctrl-C): connections are flushed, then it exits 0.
STOPSIGNAL SIGINT
# The seed topology's ports: tunnel entrance and forward, services, mesh, rendezvous (UDP).
EXPOSE 7000 7090 7007 9090 10000 12345 8080 5001 5002 5003 9999/udp
ENTRYPOINT ["switchyard"]
CMD ["run", "/etc/switchyard/switchyard.toml"]
