# One image for every relink process; the command picks the process
# (docker-compose.yml runs `relink gateway`, `relink relay`, ...).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY schemas ./schemas
RUN pip install .
RUN useradd --system --uid 10001 relink
USER relink
ENTRYPOINT ["relink"]
CMD ["--help"]
