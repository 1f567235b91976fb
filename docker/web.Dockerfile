# Web app image. The app runs from the source tree (templates/, static/ and migrations/ live beside
# the packages), so the project is installed in editable mode. No torch: the web app never needs it.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    VAR_DIR=/data MEDIA_ROOT=/data/media
RUN apt-get update && apt-get install -y --no-install-recommends libsndfile1 && rm -rf /var/lib/apt/lists/*
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app app
COPY synthesis synthesis
RUN pip install -e .
COPY static static
COPY templates templates
COPY migrations migrations
COPY demo demo
RUN useradd --system --home /data metamers && mkdir -p /data && chown metamers /data
USER metamers
EXPOSE 8000
# Migrations run on every start (idempotent); then N stateless uvicorn workers.
CMD ["sh", "-c", "metamers db upgrade && exec uvicorn app.asgi:app --host 0.0.0.0 --port 8000 --workers ${WORKERS:-2} --proxy-headers --forwarded-allow-ips='*'"]
