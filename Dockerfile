# One image for every relink process; the command picks the process
# (docker-compose.yml runs `relink gateway`, `relink relay`, ...).
#
# Two stages: the first builds relink's wheel from the checkout (the event
# schemas are copied into it by the build), the second installs only that
# wheel. No source tree reaches the image that runs, so it runs exactly what
# `pip install relink-*.whl` gives a user (tests/packaging/test_dockerfile.py
# keeps this file honest; no Docker engine runs on the project's machines).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# What the wheel is built from: the project file, the README it names, the
# package, and the schemas that services/core/schemas links to.
COPY pyproject.toml README.md ./
COPY services ./services
COPY schemas ./schemas
RUN pip wheel --no-deps --wheel-dir /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /dist /dist
RUN pip install /dist/relink-*.whl && rm -rf /dist
RUN useradd --system --uid 10001 --create-home relink \
    && mkdir -p /var/lib/relink/migrator && chown -R relink /var/lib/relink
# The migrator's local state (Faust's tables) in a place the relink user owns;
# mount a volume there to keep it across container restarts.
ENV RELINK_MIGRATOR_DATADIR=/var/lib/relink/migrator
USER relink
WORKDIR /home/relink
ENTRYPOINT ["relink"]
CMD ["--help"]
