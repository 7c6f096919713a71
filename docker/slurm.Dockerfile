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
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The munge package generates a key at install time, which every container of the image would then share:
# remove it, and scripts/slurm.sh creates one per cluster (kept in the munge-key volume).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slurm-wlm slurmdbd munge mariadb-server mariadb-client \
        fastp megahit seqkit prodigal hmmer hmmer-examples barrnap cutadapt vsearch curl ca-certificates \
        python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && rm -f /etc/munge/munge.key

# uid 1000 as in docker/Dockerfile: `flows` submits as this user, so jobs write /jobs as it too.
RUN useradd --uid 1000 --create-home emgapi \
    && install -d -o emgapi -g emgapi /jobs /results

# uv.lock's versions, as in scripts/bootstrap.sh and docker/Dockerfile; uv in a venv of its own.
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install uv==0.13.8

WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --frozen --no-install-project --python /usr/bin/python3
COPY . .
RUN /opt/uv/bin/uv sync --frozen --no-editable --python /usr/bin/python3 && rm -rf build ./*.egg-info
# The demo's profile-HMM library (assembly_analysis's hmm_library), as `make install` builds it.
RUN bash scripts/demo_hmm_library.sh

# The node itself (root: it starts system daemons). `flows` overrides the command and the user.
CMD ["bash", "/app/docker/slurm-node.sh"]
