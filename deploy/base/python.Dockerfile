# A Python 3.11 base from Debian's packages, for machines where `python:3.11-slim` cannot be
# pulled (no registry reachable). `make images` builds it on the Debian base it built with
# debootstrap; anywhere else it builds on the public Debian image:
#   docker build -f deploy/base/python.Dockerfile -t aion-local/python:3.11 deploy/base
# Bookworm's python3 is 3.11, the version the services are tested on. `python-is-python3`
# makes `python` the interpreter, as in the official image (the health checks call `python`).
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
ENV LANG=C.UTF-8
CMD ["python3"]
