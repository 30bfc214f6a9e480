# S3 stand-in of the compose test: moto's server (the MinIO image cannot be
# pulled here), on the test's own Debian base image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# hadolint ignore=DL3013
RUN python -m pip install --no-cache-dir 'moto[server]>=5' && useradd --system --uid 10002 s3
USER 10002
