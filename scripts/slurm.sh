#!/usr/bin/env bash
# Single-node Slurm for development and CI: munge, slurmdbd (on MariaDB), slurmctld and slurmd, started by hand
# because there is no systemd here. Debian only, as root.
#
#   scripts/slurm.sh up          install what is missing, configure, start, prove a job runs and is accounted
#   scripts/slurm.sh down        stop the daemons this script started
#   scripts/slurm.sh status      each daemon's state and sinfo; exit 0 only when everything is up
#   scripts/slurm.sh stop-ctld   stop only slurmctld (tests: "controller unreachable")
#   scripts/slurm.sh start-ctld  start only slurmctld and wait until it answers
#   scripts/slurm.sh stop-dbd | start-dbd      the same for slurmdbd (tests: "accounting unreachable")
#   scripts/slurm.sh stop-munge | start-munge  the same for munged (tests: "authentication fails")
#
# Environment: EMGAPI_SLURM_DIR (state, pid files and logs; default /var/lib/emgapi-slurm),
# EMGAPI_SLURM_CLUSTER (default emgapi), EMGAPI_SLURM_PARTITION (default debug),
# EMGAPI_SLURM_OVERSUBSCRIBE (jobs per CPU, default FORCE:4; NO for one job per CPU),
# EMGAPI_SLURM_DEADLINE (seconds each step may take before `up` gives up, default 60).
set -euo pipefail

STATE_DIR=${EMGAPI_SLURM_DIR:-/var/lib/emgapi-slurm}
CLUSTER=${EMGAPI_SLURM_CLUSTER:-emgapi}
PARTITION=${EMGAPI_SLURM_PARTITION:-debug}
# Up to this many jobs share a CPU. A dev or CI machine has few cores, and tests, benchmarks and end-to-end flows
# run side by side there: without sharing, one long job of someone else's makes everyone's quick jobs queue.
# NO gives one job per CPU, as on a production cluster.
OVERSUBSCRIBE=${EMGAPI_SLURM_OVERSUBSCRIBE:-FORCE:4}
# Plain `sbatch`/`squeue` in every process on the machine read /etc/slurm/slurm.conf, so the config lives there.
CONF_DIR=/etc/slurm
SLURM_CONF_FILE=$CONF_DIR/slurm.conf
DBD_CONF_FILE=$CONF_DIR/slurmdbd.conf
RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/log
# munged runs as the munge user and must own the directory of its pid and log files.
MUNGE_DIR=$STATE_DIR/munge
MUNGE_KEY=/etc/munge/munge.key
DB_NAME=emgapi_slurm_acct
DB_USER=emgapi_slurm
DB_PASS_FILE=$STATE_DIR/slurmdbd.dbpass
NODE=$(hostname -s)
DAEMON_DEADLINE=${EMGAPI_SLURM_DEADLINE:-60}

# The shell may be run from anywhere, with an unusual PATH (sudo, CI): the daemons live in sbin.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# EPOCHREALTIME and the timing arithmetic expect a "." decimal point.
export LC_ALL=C
unset SLURM_CONF

say() { printf '[slurm.sh] %s\n' "$*"; }
die() {
	printf '[slurm.sh] ERROR: %s\n' "$*" >&2
	exit 1
}

now() { printf '%s' "$EPOCHREALTIME"; }

elapsed_since() {
	local start=$1
	awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

# wait_for SECONDS DESCRIPTION COMMAND... : poll COMMAND until it succeeds or the deadline passes.
wait_for() {
	local timeout=$1 what=$2
	shift 2
	local deadline=$((${EPOCHREALTIME/./} + timeout * 1000000))
	until "$@" >/dev/null 2>&1; do
		if ((${EPOCHREALTIME/./} > deadline)); then
			say "timed out after ${timeout}s waiting for: $what"
			return 1
		fi
		sleep 0.1
	done
}

log_tail() {
	local file=$1
	if [[ -f $file ]]; then
		printf -- '----- last lines of %s -----\n' "$file" >&2
		tail -n 25 "$file" >&2
	fi
}

# --- processes -------------------------------------------------------------------------------------------------

# PID 1 in this sandbox reaps exited processes slowly, so `kill -0` reports dead daemons as alive: read the state
# in /proc/PID/stat and treat a zombie as dead. The name check guards against a recycled pid.
pid_is_running() {
	local pid=$1 name=$2 stat comm state
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	comm=${stat#*(}
	comm=${comm%)*}
	state=${stat##*) }
	state=${state%% *}
	[[ $state != Z && $state != X ]] || return 1
	[[ $comm == "${name:0:15}" ]]
}

pidfile_pid() {
	local file=$1 pid=
	[[ -f $file ]] && read -r pid <"$file" 2>/dev/null || true
	printf '%s' "$pid"
}

daemon_running() {
	local name=$1 file=$2
	pid_is_running "$(pidfile_pid "$file")" "$name"
}

daemon_stopped() { ! daemon_running "$@"; }

stop_daemon() {
	local name=$1 file=$2 pid
	pid=$(pidfile_pid "$file")
	if ! pid_is_running "$pid" "$name"; then
		rm -f "$file"
		say "$name: not running"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_for 30 "$name (pid $pid) to exit" pid_is_not_running "$pid" "$name"; then
		say "$name: still running after SIGTERM, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait_for 10 "$name (pid $pid) to die" pid_is_not_running "$pid" "$name" || die "$name (pid $pid) survived SIGKILL"
	fi
	rm -f "$file"
	say "$name: stopped (pid $pid)"
}

pid_is_not_running() { ! pid_is_running "$@"; }

# Prints the pid of a NAME process other than OWN_PID (one started by hand or by an init script).
other_instance() {
	local name=$1 own=$2 stat pid
	for stat in /proc/[0-9]*/stat; do
		pid=${stat#/proc/}
		pid=${pid%/stat}
		[[ $pid != "$own" ]] || continue
		if pid_is_running "$pid" "$name"; then
			printf '%s' "$pid"
			return 0
		fi
	done
	return 1
}

# start_daemon NAME PIDFILE LOGFILE COMMAND... : the daemons fork themselves and write their own pid file.
start_daemon() {
	local name=$1 file=$2 logfile=$3 other
	shift 3
	if daemon_running "$name" "$file"; then
		say "$name: already running (pid $(pidfile_pid "$file"))"
		return 0
	fi
	if other=$(other_instance "$name" ""); then
		die "$name is already running as pid $other, not started by this script (no $file): stop it first"
	fi
	rm -f "$file"
	# 9>&-: a daemon must not inherit the lock of this script (see main), or it would hold it for its whole life.
	if ! "$@" 9>&-; then
		log_tail "$logfile"
		die "$name did not start: $*"
	fi
	if ! wait_for "$DAEMON_DEADLINE" "$name pid file $file" daemon_running "$name" "$file"; then
		log_tail "$logfile"
		die "$name did not stay up (log: $logfile)"
	fi
	say "$name: started (pid $(pidfile_pid "$file"))"
}

# --- packages --------------------------------------------------------------------------------------------------

package_installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

apt_install() {
	say "installing: $*"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

mariadb_answers() { (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; }

install_packages() {
	local missing=() pkg
	for pkg in slurm-wlm slurmdbd munge; do
		package_installed "$pkg" || missing+=("$pkg")
	done
	command -v mariadb >/dev/null || command -v mysql >/dev/null || missing+=(mariadb-client)
	if ! mariadb_answers && [[ ! -x /usr/sbin/mariadbd ]]; then
		missing+=(mariadb-server)
	fi
	if ((${#missing[@]})); then
		apt_install "${missing[@]}"
	fi
}

# --- MariaDB ---------------------------------------------------------------------------------------------------

ensure_mariadb() {
	if mariadb_answers; then
		return 0
	fi
	say "MariaDB does not answer on 127.0.0.1:3306: starting it"
	install -d -o mysql -g mysql -m 0755 /run/mysqld
	if [[ ! -d /var/lib/mysql/mysql ]]; then
		mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
	fi
	start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql 9>&-
	wait_for "$DAEMON_DEADLINE" "MariaDB on 127.0.0.1:3306" mariadb_answers || die "MariaDB did not start"
}

# Administration as the database root: the unix socket works on a stock Debian install (unix_socket auth), TCP
# with an empty password works on machines configured that way.
sql_as_root() {
	local client
	client=$(command -v mariadb || command -v mysql)
	if "$client" --protocol=socket -uroot -e 'SELECT 1' >/dev/null 2>&1; then
		"$client" --protocol=socket -uroot "$@"
	else
		"$client" --protocol=tcp -h127.0.0.1 -P3306 -uroot "$@"
	fi
}

ensure_database() {
	local pass
	if [[ ! -s $DB_PASS_FILE ]]; then
		(umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$DB_PASS_FILE")
	fi
	pass=$(<"$DB_PASS_FILE")
	[[ $pass =~ ^[0-9a-f]+$ ]] || die "unexpected content in $DB_PASS_FILE"
	# Both hosts: with skip-name-resolve a TCP client from 127.0.0.1 matches only '127.0.0.1', without it 'localhost'.
	sql_as_root -e "
		CREATE DATABASE IF NOT EXISTS \`$DB_NAME\`;
		CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
		CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$pass';
		ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
		ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$pass';
		GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'localhost';
		GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'127.0.0.1';
	" || die "could not create the accounting database (as MariaDB root)"
}

# --- configuration ---------------------------------------------------------------------------------------------

SLURM_CONF_CHANGED=0
SLURM_CONF_NEEDS_RESTART=0
DBD_CONF_CHANGED=0

# Parameters that `scontrol reconfigure` applies to a running cluster; changing any other one restarts the
# daemons (jobs survive both, but a restart makes every client wait a few seconds).
RECONFIGURABLE=" PartitionName SchedulerParameters KillWait OverTimeLimit InactiveLimit MinJobAge EnforcePartLimits MailProg SlurmctldDebug SlurmdDebug "

# needs_restart OLD NEW : succeeds when a line outside RECONFIGURABLE differs.
needs_restart() {
	local key
	[[ -f $1 ]] || return 0
	while read -r key; do
		[[ $RECONFIGURABLE == *" $key "* ]] || return 0
	done < <(diff <(grep -v '^#' "$1") <(grep -v '^#' "$2") | sed -n 's/^[<>] *\([A-Za-z]*\)=.*/\1/p' | sort -u)
	return 1
}

# install_if_changed SOURCE TARGET MODE : prints 1 when TARGET was (re)written.
install_if_changed() {
	local src=$1 dst=$2 mode=$3
	if [[ -f $dst ]] && cmp -s "$src" "$dst"; then
		rm -f "$src"
		chmod "$mode" "$dst"
		chown root:root "$dst"
		echo 0
	else
		install -o root -g root -m "$mode" "$src" "$dst"
		rm -f "$src"
		echo 1
	fi
}

write_configs() {
	local cpus mem_total_kb mem_mb headroom_mb real_mb tmp
	cpus=$(nproc)
	mem_total_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
	mem_mb=$((mem_total_kb / 1024))
	# slurmd drains a node that reports less memory than configured; keep room for the OS and the services.
	headroom_mb=$((mem_mb / 10 > 512 ? mem_mb / 10 : 512))
	real_mb=$((mem_mb - headroom_mb > 256 ? mem_mb - headroom_mb : 256))

	install -d -m 0755 "$CONF_DIR" "$STATE_DIR" "$RUN_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"

	tmp=$(mktemp)
	cat >"$tmp" <<EOF
# Written by emgapi scripts/slurm.sh: single-node development cluster. \`scripts/slurm.sh up\` overwrites edits.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
# No cgroups in containers and small VMs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Memory is a consumable resource and a step over its --mem is killed, like on a real cluster (without cgroups the
# job ends FAILED with signal 9, not OUT_OF_MEMORY).
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
JobAcctGatherParams=OverMemoryKill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=512
# Start a job the moment it is submitted, instead of waiting for the next 3 s scheduling tick.
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=1,sched_min_interval=0,bf_interval=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
# A time limit kills at once, and the kill does not linger.
OverTimeLimit=0
KillWait=5
InactiveLimit=0
# Refuse at submission a job no node could ever run, instead of queueing it forever (reason PartitionConfig).
EnforcePartLimits=ALL
MailProg=/bin/true
# A DOWN node (slurmd restarted, host rebooted) returns to service when its slurmd registers.
ReturnToService=2
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=$OVERSUBSCRIBE
# Tests only: they change this partition's limits under their own queued jobs, where no one else's jobs wait.
PartitionName=limits Nodes=$NODE Default=NO MaxTime=INFINITE State=UP OverSubscribe=$OVERSUBSCRIBE
# The data movers' partition (SLURM_DATAMOVER_PARTITION): every analysis's results are copied to the archive's
# store by a job here. A site's is its own nodes; this one is the same single node.
PartitionName=datamover Nodes=$NODE Default=NO MaxTime=INFINITE State=UP OverSubscribe=$OVERSUBSCRIBE
EOF
	SLURM_CONF_NEEDS_RESTART=0
	if needs_restart "$SLURM_CONF_FILE" "$tmp"; then
		SLURM_CONF_NEEDS_RESTART=1
	fi
	SLURM_CONF_CHANGED=$(install_if_changed "$tmp" "$SLURM_CONF_FILE" 0644)

	tmp=$(mktemp)
	cat >"$tmp" <<EOF
# Written by emgapi scripts/slurm.sh. slurmdbd refuses this file unless it is mode 0600 and owned by SlurmUser.
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$(<"$DB_PASS_FILE")
StorageLoc=$DB_NAME
EOF
	DBD_CONF_CHANGED=$(install_if_changed "$tmp" "$DBD_CONF_FILE" 0600)
}

# --- daemons ---------------------------------------------------------------------------------------------------

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
	if daemon_running munged "$MUNGE_DIR/munged.pid"; then
		say "munged: already running (pid $(pidfile_pid "$MUNGE_DIR/munged.pid"))"
		return 0
	fi
	if munge_works; then
		say "munged: a munged not started by this script answers; using it"
		return 0
	fi
	install -d -o munge -g munge -m 0755 /run/munge
	install -d -o munge -g munge -m 0700 "$MUNGE_DIR"
	if [[ ! -s $MUNGE_KEY ]]; then
		say "creating $MUNGE_KEY"
		install -d -o munge -g munge -m 0700 "$(dirname "$MUNGE_KEY")"
		if command -v mungekey >/dev/null; then
			mungekey --create --keyfile="$MUNGE_KEY"
		else
			dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
		fi
	fi
	chown munge:munge "$MUNGE_KEY"
	chmod 0400 "$MUNGE_KEY"
	start_daemon munged "$MUNGE_DIR/munged.pid" "$MUNGE_DIR/munged.log" \
		runuser -u munge -- munged --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log"
	wait_for "$DAEMON_DEADLINE" "munge credentials to round-trip" munge_works || die "munged does not answer"
}

slurmdbd_answers() { sacctmgr --noheader --parsable2 list cluster format=cluster; }

cluster_registered() {
	sacctmgr --noheader --parsable2 list cluster format=cluster | grep -qx -- "$CLUSTER"
}

start_slurmdbd() {
	if ((DBD_CONF_CHANGED)) && daemon_running slurmdbd "$RUN_DIR/slurmdbd.pid"; then
		say "slurmdbd.conf changed: restarting slurmdbd"
		stop_daemon slurmdbd "$RUN_DIR/slurmdbd.pid"
	fi
	start_daemon slurmdbd "$RUN_DIR/slurmdbd.pid" "$LOG_DIR/slurmdbd.log" slurmdbd
	if ! wait_for "$DAEMON_DEADLINE" "slurmdbd to answer sacctmgr" slurmdbd_answers; then
		log_tail "$LOG_DIR/slurmdbd.log"
		die "slurmdbd does not answer"
	fi
	# Registering before slurmctld starts means slurmctld finds its cluster at once, on a fresh database too.
	if ! cluster_registered; then
		sacctmgr --immediate add cluster "$CLUSTER" >/dev/null
	fi
	wait_for "$DAEMON_DEADLINE" "cluster $CLUSTER in slurmdbd" cluster_registered || die "cluster $CLUSTER not registered"
}

ctld_answers() { scontrol ping | grep -q 'is UP'; }

start_slurmctld() {
	start_daemon slurmctld "$RUN_DIR/slurmctld.pid" "$LOG_DIR/slurmctld.log" slurmctld
	if ! wait_for "$DAEMON_DEADLINE" "slurmctld to answer scontrol ping" ctld_answers; then
		log_tail "$LOG_DIR/slurmctld.log"
		die "slurmctld does not answer"
	fi
}

start_slurmd() {
	start_daemon slurmd "$RUN_DIR/slurmd.pid" "$LOG_DIR/slurmd.log" slurmd -N "$NODE"
}

node_state() { sinfo --noheader --Node --nodes="$NODE" --format=%t 2>/dev/null | head -n1; }

# Succeeds once the node can run jobs; resumes a node left DOWN or DRAINED by an earlier life of the cluster.
node_usable() {
	local state
	state=$(node_state)
	case $state in
	idle | mix | alloc | comp) return 0 ;;
	down | drain | drng | fail | failg | inval)
		scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
		return 1
		;;
	*) return 1 ;;
	esac
}

PROBE_ID=
probe_accounted() {
	local state
	state=$(sacct --noheader --parsable2 --allocations --starttime=now-1days --jobs="$PROBE_ID" --format=State)
	case $state in
	COMPLETED) return 0 ;;
	FAILED* | CANCELLED* | TIMEOUT* | NODE_FAIL* | OUT_OF_MEMORY* | BOOT_FAIL*)
		die "probe job $PROBE_ID ended $state (logs: $LOG_DIR)"
		;;
	*) return 1 ;;
	esac
}

run_probe_job() {
	# Ahead of everything queued (root may lower nice below 0): `up` on a busy cluster need not wait its turn.
	PROBE_ID=$(sbatch --parsable --no-requeue --job-name=emgapi-slurm-probe --chdir="$STATE_DIR" \
		--output=/dev/null --time=1 --mem=16 --nice=-1000 --wrap=true)
	PROBE_ID=${PROBE_ID%%;*}
	if ! wait_for "$DAEMON_DEADLINE" "probe job $PROBE_ID to complete and appear in sacct" probe_accounted; then
		squeue --jobs="$PROBE_ID" --states=all >&2 || true
		log_tail "$LOG_DIR/slurmctld.log"
		die "probe job $PROBE_ID did not complete"
	fi
}

# --- commands --------------------------------------------------------------------------------------------------

require_root() {
	[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and starts system daemons)"
}

cmd_up() {
	local start
	start=$(now)
	require_root
	install_packages
	install -d -m 0755 "$STATE_DIR" "$RUN_DIR" "$LOG_DIR"
	ensure_mariadb
	ensure_database
	write_configs
	local reconfigure=0
	if ((SLURM_CONF_CHANGED)); then
		if daemon_running slurmctld "$RUN_DIR/slurmctld.pid" || daemon_running slurmd "$RUN_DIR/slurmd.pid"; then
			if ((SLURM_CONF_NEEDS_RESTART)); then
				say "slurm.conf changed: restarting slurmctld and slurmd"
				stop_daemon slurmd "$RUN_DIR/slurmd.pid"
				stop_daemon slurmctld "$RUN_DIR/slurmctld.pid"
			else
				reconfigure=1
			fi
		fi
	fi
	start_munge
	start_slurmdbd
	start_slurmctld
	start_slurmd
	if ((reconfigure)); then
		say "slurm.conf changed: scontrol reconfigure"
		scontrol reconfigure || die "scontrol reconfigure failed (log: $LOG_DIR/slurmctld.log)"
	fi
	if ! wait_for "$DAEMON_DEADLINE" "node $NODE to be idle" node_usable; then
		sinfo --Node --long >&2 || true
		log_tail "$LOG_DIR/slurmd.log"
		die "node $NODE is not usable (state: $(node_state))"
	fi
	run_probe_job
	say "cluster $CLUSTER is up in $(elapsed_since "$start") s: node $NODE ($(nproc) CPUs), partition $PARTITION," \
		"probe job $PROBE_ID completed and accounted"
	say "config $SLURM_CONF_FILE, state and logs in $STATE_DIR"
	sinfo
}

cmd_down() {
	require_root
	stop_daemon slurmd "$RUN_DIR/slurmd.pid"
	stop_daemon slurmctld "$RUN_DIR/slurmctld.pid"
	stop_daemon slurmdbd "$RUN_DIR/slurmdbd.pid"
	stop_daemon munged "$MUNGE_DIR/munged.pid"
}

report_daemon() {
	local name=$1 file=$2
	if daemon_running "$name" "$file"; then
		printf '%-10s running (pid %s)\n' "$name" "$(pidfile_pid "$file")"
	else
		printf '%-10s stopped\n' "$name"
		return 1
	fi
}

cmd_status() {
	local ok=0
	if daemon_running munged "$MUNGE_DIR/munged.pid"; then
		report_daemon munged "$MUNGE_DIR/munged.pid"
	elif munge_works; then
		printf '%-10s running (not started by this script)\n' munged
	else
		printf '%-10s stopped\n' munged
		ok=1
	fi
	report_daemon slurmdbd "$RUN_DIR/slurmdbd.pid" || ok=1
	report_daemon slurmctld "$RUN_DIR/slurmctld.pid" || ok=1
	report_daemon slurmd "$RUN_DIR/slurmd.pid" || ok=1
	if ((ok == 0)) && ctld_answers 2>/dev/null; then
		sinfo || ok=1
	else
		ok=1
	fi
	return $ok
}

cmd_stop_ctld() {
	require_root
	stop_daemon slurmctld "$RUN_DIR/slurmctld.pid"
}

cmd_start_ctld() {
	require_root
	[[ -f $SLURM_CONF_FILE ]] || die "no $SLURM_CONF_FILE: run '$0 up' first"
	start_slurmctld
}

cmd_stop_dbd() {
	require_root
	stop_daemon slurmdbd "$RUN_DIR/slurmdbd.pid"
}

cmd_start_dbd() {
	require_root
	[[ -f $DBD_CONF_FILE ]] || die "no $DBD_CONF_FILE: run '$0 up' first"
	DBD_CONF_CHANGED=0
	start_slurmdbd
}

cmd_stop_munge() {
	require_root
	stop_daemon munged "$MUNGE_DIR/munged.pid"
}

cmd_start_munge() {
	require_root
	start_munge
}

usage() {
	echo "usage: $0 up|down|status|stop-ctld|start-ctld|stop-dbd|start-dbd|stop-munge|start-munge" >&2
	exit 2
}

main() {
	(($# == 1)) || usage
	# One invocation at a time: two starting slurmctld at once (a test's start-ctld beside another `up`) leave one
	# slurmctld running whose pid file the other removed on its way out.
	install -d -m 0755 "$STATE_DIR"
	exec 9>"$STATE_DIR/slurm.sh.lock"
	flock 9
	case $1 in
	up) cmd_up ;;
	down) cmd_down ;;
	status) cmd_status ;;
	stop-ctld) cmd_stop_ctld ;;
	start-ctld) cmd_start_ctld ;;
	stop-dbd) cmd_stop_dbd ;;
	start-dbd) cmd_start_dbd ;;
	stop-munge) cmd_stop_munge ;;
	start-munge) cmd_start_munge ;;
	*) usage ;;
	esac
}

main "$@"
