# A single-node Slurm cluster from Debian bookworm's packages, configured and started by the repository's own
# scripts/slurm.sh, with the pipeline's tools for the jobs. The project is installed in a venv too, so the
# `flows` service runs from this image: same Slurm client binaries, same users (a job runs as its submitter's uid,
# which must exist on the node) and same tools.
FROM debian:bookworm-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The munge package generates a key at install time, which every container of the image would then share:
# remove it, and scripts/slurm.sh creates one per cluster (kept in the munge-key volume).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slurm-wlm slurmdbd munge mariadb-server mariadb-client \
        fastp megahit seqkit curl ca-certificates \
        python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /etc/munge/munge.key

# uid 1000 as in docker/Dockerfile: `flows` submits as this user, so jobs write /jobs as it too.
RUN useradd --uid 1000 --create-home emgapi \
    && install -d -o emgapi -g emgapi /jobs

COPY pyproject.toml /tmp/deps/
RUN python3 -m venv "$VIRTUAL_ENV" && pip install /tmp/deps && rm -rf /tmp/deps

WORKDIR /app
COPY . .
RUN pip install --no-deps . && rm -rf build ./*.egg-info

# The node itself (root: it starts system daemons). `flows` overrides the command and the user.
CMD ["bash", "/app/docker/slurm-node.sh"]
