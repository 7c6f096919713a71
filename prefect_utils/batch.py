"""Several jobs of one step as one Slurm job (`batch_spec`), and what it says of each of them (`read_statuses`).

A batch runs its members' script one after another, each in its own environment (its job spec's, unchanged) and
with its output in its own log, and appends one line per member to a status file: ``<label>\tcompleted\t`` or
``<label>\tfailed\t<why>``. A member that fails does not stop the others: the batch job itself completes, and the
caller reads each member's fate from the status file. Only what stops the whole job (out of memory or time, a
node failure) is the batch's, and a resubmission runs every member again (their scripts are idempotent).

The members' script is the step's fixed text, written into the wrapper as a quoted here-document; every piece
of data still reaches it through the environment (``BATCH_<i>__<NAME>`` becomes ``<NAME>`` for member i).

Standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from prefect_utils.job_spec import JobSpec

__all__ = ["COMPLETED", "MemberStatus", "batch_spec", "read_statuses"]

COMPLETED = "completed"
FAILED = "failed"
_DELIMITER = "EMGAPI_BATCH_MEMBER_SCRIPT"

_WRAPPER = """#!/bin/bash
# One job, several runs of one step: each member's script in its own environment and log, one after another.
set -uo pipefail
: "${BATCH_SIZE:?}" "${BATCH_STATUS:?}"
member_script="$(mktemp)"
trap 'rm -f "$member_script"' EXIT
cat > "$member_script" <<'%(delimiter)s'
%(script)s
%(delimiter)s
printf 'member\\tstatus\\treason\\n' > "$BATCH_STATUS"
for ((i = 1; i <= BATCH_SIZE; i++)); do
    label_var="BATCH_LABEL_$i" log_var="BATCH_LOG_$i" dir_var="BATCH_WORKDIR_$i"
    label="${!label_var:?}" log="${!log_var:?}" dir="${!dir_var:?}"
    mkdir -p "$dir" "$(dirname "$log")"
    (
        cd "$dir" || exit 1
        for name in $(compgen -v "BATCH_${i}__"); do
            export "${name#"BATCH_${i}__"}=${!name}"
        done
        exec bash "$member_script"
    ) > "$log" 2>&1
    code=$?
    if (( code == 0 )); then
        printf '%%s\\tcompleted\\t\\n' "$label" >> "$BATCH_STATUS"
    else
        last="$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | tr '\\t' ' ' || true)"
        printf '%%s\\tfailed\\texit code %%d: %%s (log %%s)\\n' "$label" "$code" "${last:-no output}" "$log" \\
            >> "$BATCH_STATUS"
    fi
    echo "$label: exit code $code (log $log)"
done
"""


def batch_spec(
    members: Sequence[tuple[str, JobSpec]], *, name: str, workdir: str, max_time_limit_minutes: int
) -> JobSpec:
    """One job running every member (label, spec) in turn, in `workdir` (its log and `status.tsv` there).

    The members must be jobs of one step: one script, cpus, memory and partition. The time limit is the sum of
    theirs, capped at `max_time_limit_minutes`.
    """
    if not members:
        raise ValueError("a batch needs at least one member")
    first = members[0][1]
    for label, spec in members:
        shared = (spec.script, spec.cpus, spec.memory_mb, spec.partition)
        if shared != (first.script, first.cpus, first.memory_mb, first.partition):
            raise ValueError(f"member {label} is not a job of the same step as {members[0][0]}")
        if spec.output_path is None:
            raise ValueError(f"member {label} has no log path")
    if f"\n{_DELIMITER}\n" in f"\n{first.script}\n":
        raise ValueError(f"a member's script contains the line {_DELIMITER}")
    environment = {"BATCH_SIZE": str(len(members)), "BATCH_STATUS": os.path.join(workdir, "status.tsv")}
    for index, (label, spec) in enumerate(members, 1):
        environment[f"BATCH_LABEL_{index}"] = label
        environment[f"BATCH_LOG_{index}"] = str(spec.output_path)
        environment[f"BATCH_WORKDIR_{index}"] = spec.workdir
        environment.update({f"BATCH_{index}__{key}": value for key, value in spec.environment.items()})
    script = first.script.rstrip("\n")
    time_limit = min(sum(spec.time_limit_minutes for _, spec in members), max_time_limit_minutes)
    return JobSpec(
        name=name,
        script=_WRAPPER % {"delimiter": _DELIMITER, "script": script},
        workdir=workdir,
        partition=first.partition,
        cpus=first.cpus,
        memory_mb=first.memory_mb,
        time_limit_minutes=max(time_limit, first.time_limit_minutes),
        environment=environment,
        output_path=os.path.join(workdir, "batch.log"),
    )


# A member's fate, as its batch's status file says: COMPLETED, or why it failed ("exit code 1: <last line>").
MemberStatus = str


def read_statuses(spec: JobSpec) -> dict[str, MemberStatus]:
    """Each member's line of the batch's status file: COMPLETED or why it failed; a member without a line (the job
    stopped before it, or the file is gone) is absent."""
    path = Path(spec.environment["BATCH_STATUS"])
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {}
    statuses: dict[str, MemberStatus] = {}
    for line in lines[1:]:
        label, _, rest = line.partition("\t")
        status, _, reason = rest.partition("\t")
        if status == COMPLETED:
            statuses[label] = COMPLETED
        elif status == FAILED:
            statuses[label] = reason or "it failed, with no reason given"
    return statuses
