FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY common ./common
COPY migrations ./migrations
COPY opsconductor ./opsconductor
# the monitor served at / (api/web.py): its pages and the JS SDK's modules, as they are in the repository
COPY web ./web
COPY sdk/js/src ./sdk/js/src
COPY alembic.ini Procfile ./
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["honcho", "start"]
