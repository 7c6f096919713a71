#!/usr/bin/env bash
# Command of the `slurm` service: bring the single-node cluster up with scripts/slurm.sh (which proves a job runs
# and is accounted), then stay in the foreground showing the daemons' logs. On `docker compose stop` the daemons
# are stopped properly, so slurmctld saves its state and MariaDB its tables before the container goes.
set -euo pipefail
log_dir=${EMGAPI_SLURM_DIR:-/var/lib/emgapi-slurm}/log

# Jobs run as emgapi (the uid `flows` submits as) and write here; a volume created empty may be root's.
install -d -o emgapi -g emgapi /jobs
/app/scripts/slurm.sh up

stop() {
	/app/scripts/slurm.sh down || true
	mariadb-admin --protocol=socket -uroot shutdown || true
	exit 0
}
trap stop TERM INT

tail -n 0 -F "$log_dir"/*.log &
wait $!
