# The ECP worker image. No keys inside: compose mounts each role's keys
# read-only at run time, so one image serves the authority and the executor.
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/ecp
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authority ./authority
COPY activities ./activities
COPY workflows ./workflows
COPY lineage ./lineage
COPY ecp ./ecp
# The OTLP exporter is what the compose stack's ECP_OTEL_EXPORTER=otlp uses.
RUN /opt/ecp/bin/pip install . "opentelemetry-exporter-otlp-proto-http>=1.28,<2"

FROM python:3.11.11-slim-bookworm
COPY --from=build /opt/ecp /opt/ecp
RUN useradd --system --uid 10001 --home-dir /data --create-home ecp
USER 10001:10001
ENV PATH=/opt/ecp/bin:$PATH PYTHONUNBUFFERED=1 ECP_HOME=/data
WORKDIR /data
ENTRYPOINT ["python", "-m", "ecp"]
CMD ["worker"]
