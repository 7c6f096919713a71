"""Batched steps: the runs of a request that are ready for a step with `batch: {max_runs: N}` share one Slurm job.

The plan keeps a step per run (its frozen spec, key and policy, as for any step). When a pass finds runs ready for
a batched step and in no batch yet, it groups them, in accession order, into batches of up to N runs: a partial
batch waits while another run of the request may still become ready for the step, so a study's runs fill whole
samplesheets rather than one job per run that happened to be ready first. A batch is frozen as a `StepBatch` row
(its members, with the first attempt of their step, and its job spec, built by `prefect_utils.batch` from the
members' frozen specs) before its job is submitted: a rerun finds the row and submits the same key, or reattaches
to its job. The key covers the members and their generation, so a retry's batch is a new job.

Each member's history is made from its batch's (`member_histories`): running while the batch runs; when the batch
has ended, what the job's status file says of the run (read once per attempt, kept in the row). One run failing
inside a batch fails that run alone, with its reason; a batch that ran out of memory or time is escalated as a
whole by the step's policy; a retry of the request gives the failed runs' steps a new first attempt, so they are
in no batch again and regroup among themselves.
"""

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from prefect_utils.batch import COMPLETED, batch_spec, read_statuses
from prefect_utils.job_spec import JobSpec
from prefect_utils.keys import job_key
from prefect_utils.ledger import JobSubmission, LedgerRecord
from prefect_utils.policy import ResubmitPolicy, describe_failure
from prefect_utils.states import JobState
from workflows.models import PlanStep, StepBatch

# The directory, beside a request's run directories, that holds each batch's status file and log.
BATCHES_DIR = "batches"


@dataclass
class BatchDecisions:
    """What the batched steps that are ready need, by (run accession, step)."""

    submissions: dict[tuple[str, str], JobSubmission] = field(default_factory=dict)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    # Waiting for more runs to fill their batch (another run may still become ready for the step).
    held: set[tuple[str, str]] = field(default_factory=set)


class RequestBatches:
    """The batches of one request, by member: read once per pass (a row per batch, not per run)."""

    def __init__(self, request_id: int, rows: Sequence[StepBatch]) -> None:
        self.request_id = request_id
        self.rows = list(rows)
        self._by_member: dict[tuple[str, str, int], StepBatch] = {}
        for row in self.rows:
            self._index(row)

    @classmethod
    def load(cls, request_id: int) -> "RequestBatches":
        return cls(request_id, list(StepBatch.objects.filter(request_id=request_id)))

    def _index(self, row: StepBatch) -> None:
        for accession, first_attempt in row.members.items():
            self._by_member[(accession, row.step, first_attempt)] = row

    def keys(self) -> set[str]:
        return {row.key for row in self.rows}

    def batch_of(self, step: PlanStep) -> StepBatch | None:
        """The batch of this generation of the step (a retried step has a new first attempt: no batch yet)."""
        return self._by_member.get((step.run_accession, step.step, step.first_attempt))

    def member_histories(self, steps: Sequence[PlanStep], attempts: dict[str, list[LedgerRecord]]) -> None:
        """Give each batched member of `steps` the history its batch's job makes for it, in `attempts` under the
        member's own key (which has no job of its own); `attempts` must hold the batches' keys. Reads the status
        file of each batch that ended since it was last read."""
        self._read_statuses(attempts)
        for step in steps:
            if not step.batch_max_runs:
                continue
            batch = self.batch_of(step)
            if batch is not None:
                attempts[step.key] = _member_history(step, batch, attempts.get(batch.key, []))

    def _read_statuses(self, attempts: Mapping[str, list[LedgerRecord]]) -> None:
        for row in self.rows:
            records = attempts.get(row.key) or []
            last = records[-1] if records else None
            if last is None or not last.is_terminal or row.statuses_attempt == last.attempt:
                continue
            # A job sbatch refused never ran: its status file, if any, is an earlier attempt's.
            row.statuses = read_statuses(JobSpec.from_canonical(last.spec)) if last.job_id else {}
            row.statuses_attempt = last.attempt
            StepBatch.objects.filter(pk=row.pk).update(statuses=row.statuses, statuses_attempt=last.attempt)

    def decide(
        self,
        ready: Sequence[PlanStep],
        attempts: Mapping[str, list[LedgerRecord]],
        labels: Mapping[str, Any],
    ) -> tuple[BatchDecisions, list[PlanStep]]:
        """What each ready step of a batch needs: its batch submitted (an attempt the controller never took, or
        the policy's next) or its failure; and the ready steps in no batch yet, for `form` (once the caller knows
        which runs failed). `ready` must have their submission fields read."""
        decisions = BatchDecisions()
        unbatched: list[PlanStep] = []
        for step in ready:
            batch = self.batch_of(step)
            if batch is None:
                unbatched.append(step)
                continue
            member = (step.run_accession, step.step)
            records = attempts.get(batch.key, [])
            last = records[-1] if records else None
            if last is None or last.needs_submission:
                attempt, spec = (last.attempt, last.spec) if last else (1, batch.spec)
                decisions.submissions[member] = JobSubmission(batch.key, attempt, spec, {}, labels)
                continue
            next_spec = None
            if last.state != JobState.COMPLETED:
                next_spec = ResubmitPolicy.from_dict(batch.policy).next_spec(records)
            if next_spec is None:
                decisions.failures[member] = _member_failure(step, batch, last)
                continue
            decisions.submissions[member] = JobSubmission(
                batch.key, last.attempt + 1, next_spec.canonical(), {}, labels, last.attempt
            )
        return decisions, unbatched

    def form(
        self,
        unbatched: Sequence[PlanStep],
        may_still_come: Mapping[tuple[str, str], int],
        labels: Mapping[str, Any],
        decisions: BatchDecisions,
    ) -> None:
        """Group the ready steps in no batch, by step, in accession order, into batches of up to `batch_max_runs`
        (frozen now, their first attempt added to `decisions`); a partial batch is held while `may_still_come`
        counts, for its (pipeline, step), runs that may yet become ready for it."""
        by_step: dict[tuple[str, str], list[PlanStep]] = defaultdict(list)
        for step in unbatched:
            by_step[(step.pipeline, step.step)].append(step)
        for (pipeline, name), steps in by_step.items():
            steps.sort(key=lambda s: s.run_accession)
            size = steps[0].batch_max_runs
            chunks = [steps[i : i + size] for i in range(0, len(steps), size)]
            if len(chunks[-1]) < size and may_still_come.get((pipeline, name), 0):
                decisions.held.update((s.run_accession, s.step) for s in chunks.pop())
            for chunk in chunks:
                batch = self._form(chunk)
                for step in chunk:
                    decisions.submissions[(step.run_accession, step.step)] = JobSubmission(
                        batch.key, 1, batch.spec, {}, labels
                    )

    def _form(self, members: Sequence[PlanStep]) -> StepBatch:
        """Freeze a batch of these steps (one step of several runs) before its job is submitted."""
        first = members[0]
        generation = {step.run_accession: step.first_attempt for step in members}
        identity = hashlib.sha256(
            json.dumps(sorted((step.key, step.first_attempt) for step in members)).encode()
        ).hexdigest()[:12]
        specs = [(step.run_accession, JobSpec.from_canonical(step.spec)) for step in members]
        # Beside the runs' directories (all below the request's).
        root = os.path.commonpath([os.path.dirname(spec.workdir) for _, spec in specs])
        policy = ResubmitPolicy.from_dict(first.policy)
        spec = batch_spec(
            specs,
            name=f"emgapi-{first.step}-batch-{identity[:8]}",
            workdir=os.path.join(root, BATCHES_DIR, f"{first.step}-{identity}"),
            max_time_limit_minutes=policy.max_time_limit_minutes,
        )
        inputs = {f"{step.run_accession}@{step.first_attempt}": step.key for step in members}
        row, _ = StepBatch.objects.get_or_create(
            key=job_key(spec, inputs),
            defaults={
                "request_id": self.request_id,
                "pipeline": first.pipeline,
                "step": first.step,
                "members": generation,
                "label": batch_label([step.run_accession for step in members]),
                "spec": spec.canonical(),
                "policy": first.policy,
            },
        )
        self.rows.append(row)
        self._index(row)
        return row


def batch_label(accessions: Sequence[str]) -> str:
    """How the jobs table names a batch's runs: "3 runs: ERR1 … ERR3"."""
    if len(accessions) == 1:
        return f"1 run: {accessions[0]}"
    return f"{len(accessions)} runs: {accessions[0]} … {accessions[-1]}"


def _member_history(step: PlanStep, batch: StepBatch, records: Sequence[LedgerRecord]) -> list[LedgerRecord]:
    """The batch's attempts as the member's (numbered from the member's first attempt), the last one as the
    status file has it once the batch has ended: completed, or failed with the run's own reason."""
    shift = step.first_attempt - 1
    history = [replace(record, key=step.key, attempt=record.attempt + shift) for record in records]
    if not history or not history[-1].is_terminal:
        return history
    last = history[-1]
    status = _status_of(step, batch, records[-1])
    if status == COMPLETED:
        history[-1] = replace(last, state=JobState.COMPLETED)
    elif last.state == JobState.COMPLETED:
        history[-1] = replace(
            last, state=JobState.FAILED, log_tail=status or "the batch's status file has no line for this run"
        )
    return history


def _status_of(step: PlanStep, batch: StepBatch, attempt: LedgerRecord) -> str | None:
    """The member's line of the status file that `attempt` of its batch wrote, if it was read and has one."""
    return batch.statuses.get(step.run_accession) if batch.statuses_attempt == attempt.attempt else None


def _member_failure(step: PlanStep, batch: StepBatch, last: LedgerRecord) -> str:
    """Why a run failed inside its batch: its own line of the status file, or else why the batch job failed."""
    where = f"{step.step} (batch job {last.job_id or 'never submitted'} of {len(batch.members)} runs)"
    status = _status_of(step, batch, last)
    if status and status != COMPLETED:
        return f"{where}: {status}"
    if last.state == JobState.COMPLETED:
        return f"{where}: the batch's status file has no line for this run"
    return f"{where}: {describe_failure(last)}"


def with_member_histories(
    request_id: int,
    steps: Sequence[PlanStep],
    attempts: dict[str, list[LedgerRecord]],
    read_attempts: Callable[[Iterable[str]], dict[str, list[LedgerRecord]]],
) -> RequestBatches:
    """`attempts` completed with the request's batches: their own records (read with `read_attempts`, the
    ledger's `attempts`) and their members' histories."""
    if not any(step.batch_max_runs for step in steps):
        return RequestBatches(request_id, [])  # no batched step: no query on every pass
    batches = RequestBatches.load(request_id)
    attempts.update(read_attempts(batches.keys()))
    batches.member_histories(steps, attempts)
    return batches
