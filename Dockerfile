# syntax=docker/dockerfile:1
#
# The fraudcep image: the `fraudcep` command with the Kafka runner and the AWS adapters.
#
#   docker build -t fraudcep .
#   docker run --rm fraudcep --help              # ENTRYPOINT is `fraudcep`, CMD is `run`
#   docker run --rm fraudcep demo                # any subcommand: demo, rules, generate, run
#
# docker-compose.yml builds it for its `runner` and `generator` services (docs/docker.md).
#
# Two stages: the first builds a virtual environment, the second copies only that into a
# clean python:3.11-slim, so nothing used for building (pip's caches, the build backend,
# the source tree) ends up in the image. Every dependency comes as a binary wheel
# (confluent-kafka and pyarrow have manylinux wheels), so no compiler is needed.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/fraudcep

WORKDIR /src
# Only what the package is built from (pyproject.toml lists the packages: `fraudcep` and
# the `fraudcep_*` adapters); .dockerignore keeps the rest of the repository out anyway.
COPY pyproject.toml ./
COPY fraudcep ./fraudcep
COPY adapters ./adapters
# A regular (not editable) install: the venv holds its own copy and needs no /src.
# The extras come from pyproject.toml: kafka (confluent-kafka, prometheus-client) for
# `fraudcep run` and `fraudcep generate`, aws (boto3, pyarrow) for the AWS adapters.
RUN /opt/fraudcep/bin/pip install ".[kafka,aws]" \
    && /opt/fraudcep/bin/fraudcep --version


FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="fraudcep" \
      org.opencontainers.image.description="CEP engine for real-time payment-fraud detection"

ENV PATH=/opt/fraudcep/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FRAUDCEP_CHECKPOINTS=/var/lib/fraudcep/checkpoints

# A fixed, unprivileged user. Its home is the working directory; the checkpoint directory
# belongs to it, so a named volume mounted there starts out writable by it (Docker copies
# the directory's ownership into an empty named volume). No VOLUME instruction: it would
# leave an anonymous volume behind every `docker run` (generate, demo, rules too);
# docker-compose.yml mounts a named volume there instead.
RUN groupadd --system --gid 10001 fraudcep \
    && useradd --system --uid 10001 --gid fraudcep --home-dir /var/lib/fraudcep \
       --no-create-home --shell /usr/sbin/nologin fraudcep \
    && mkdir -p /var/lib/fraudcep/checkpoints \
    && chown -R fraudcep:fraudcep /var/lib/fraudcep

COPY --from=build /opt/fraudcep /opt/fraudcep

USER fraudcep:fraudcep
WORKDIR /var/lib/fraudcep

# The Prometheus metrics endpoint of `fraudcep run` (FRAUDCEP_METRICS_ADDRESS; its default
# 127.0.0.1:9108 is unreachable from outside the container: set 0.0.0.0:9108 to publish it).
EXPOSE 9108

# Exec form: fraudcep is PID 1 and gets SIGTERM itself; `fraudcep run` stops gracefully on
# it (final commit and checkpoints).
ENTRYPOINT ["fraudcep"]
CMD ["run"]
