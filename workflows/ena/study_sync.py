"""Bring a study's ENA metadata into the archive, and gate its runs before any cluster work (data QA).

A sync of a study synced before writes what it found changed to the study's change log (`StudyChange`): runs
added, runs ENA no longer lists (withdrawn or suppressed: marked, never deleted, their analyses kept; listed
again: restored), checksums changed, metadata changed. A first sync logs nothing: everything is new.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from analyses.models import Run, Sample, Study, StudyChange
from workflows.ena.client import EnaClient
from workflows.ena.runs import RunCheck, run_inputs_from_ena
from workflows.pg import is_postgres

# First half of a two-int advisory key ("EMY"), apart from the request, capacity and sweep locks' namespaces.
_SYNC_NAMESPACE = 0x454D59


# What a sync compares, and logs as "metadata changed" when it differs.
_STUDY_FIELDS = ("title", "description", "secondary_ena_accession")
_RUN_FIELDS = (
    "instrument_platform",
    "instrument_model",
    "library_strategy",
    "library_source",
    "library_layout",
    "fastq_urls",
    "read_count",
    "base_count",
)


@dataclass(frozen=True)
class SyncResult:
    study_id: int
    usable_run_ids: list[int]
    rejected: dict[str, str]  # run accession -> why it cannot be processed
    added: list[str] = field(default_factory=list)  # usable runs new since the last sync
    changes: int = 0  # entries written to the change log


def sync_study(accession: str, client: EnaClient, *, check_run: RunCheck) -> SyncResult:
    """Create or update the Study, its Samples and Runs from ENA; record ``check_run``'s QA verdict on each run.

    The gate is the pipeline's (its protocol's ``check_run``): what is usable depends on what will run on it.
    """
    ena_study = client.fetch_study(accession)
    ena_runs = client.fetch_read_runs(ena_study.study_accession)
    usable: list[int] = []
    rejected: dict[str, str] = {}
    added: list[str] = []
    with transaction.atomic():
        _serialise_syncs_of(ena_study.study_accession)
        study = Study.objects.filter(
            Q(ena_accession=ena_study.study_accession)
            | Q(ena_accession=accession)
            | Q(secondary_ena_accession=accession)
        ).first() or Study(ena_accession=ena_study.study_accession)
        now = timezone.now()
        log = _ChangeLog(study, now) if study.last_synced_with_ena is not None else None
        before = {name: getattr(study, name) for name in _STUDY_FIELDS}
        study.ena_accession = ena_study.study_accession
        study.secondary_ena_accession = ena_study.secondary_study_accession or ""
        study.title = ena_study.title[:500]
        study.description = ena_study.description
        study.last_synced_with_ena = now
        study.save()
        known = {run.accession: run for run in Run.objects.filter(study=study)} if log else {}
        if log:
            log.compare("", before, {name: getattr(study, name) for name in _STUDY_FIELDS})
        for ena_run in ena_runs:
            sample = None
            if ena_run.sample_accession:
                sample, _ = Sample.objects.update_or_create(
                    accession=ena_run.sample_accession,
                    defaults={
                        "study": study,
                        "secondary_accession": ena_run.secondary_sample_accession or "",
                    },
                )
            reason = check_run(ena_run)
            inputs = run_inputs_from_ena(ena_run, check_run=check_run) if reason is None else None
            values = {
                "instrument_platform": ena_run.instrument_platform,
                "instrument_model": ena_run.instrument_model,
                "library_strategy": ena_run.library_strategy,
                "library_source": ena_run.library_source,
                "library_layout": ena_run.library_layout,
                "fastq_urls": list(inputs.fastq_urls if inputs else ena_run.fastq_urls),
                "fastq_md5": list(inputs.fastq_md5 if inputs else ena_run.fastq_md5),
                "read_count": ena_run.read_count,
                "base_count": ena_run.base_count,
            }
            if log:
                log.run(ena_run.run_accession, known.pop(ena_run.run_accession, None), values)
            run, _ = Run.objects.update_or_create(
                accession=ena_run.run_accession,
                defaults={
                    "study": study,
                    "sample": sample,
                    **values,
                    "qa_status": Run.QaStatus.PASSED if reason is None else Run.QaStatus.FAILED,
                    "qa_reason": reason or "",
                    "withdrawn_at": None,
                },
            )
            if reason is None:
                usable.append(run.pk)
                if log and run.accession in log.added:
                    added.append(run.accession)
            else:
                rejected[run.accession] = reason
        changes = (
            log.write(withdrawn=[run for run in known.values() if run.withdrawn_at is None]) if log else 0
        )
    return SyncResult(study.pk, usable, rejected, added=added, changes=changes)


class _ChangeLog:
    """The change log entries of one sync of a study synced before."""

    def __init__(self, study: Study, synced_at: datetime) -> None:
        self.study, self.synced_at = study, synced_at
        self.entries: list[StudyChange] = []
        self.added: set[str] = set()

    def _add(self, kind: str, run_accession: str, detail: dict[str, Any] | None = None) -> None:
        self.entries.append(
            StudyChange(
                study=self.study,
                kind=kind,
                run_accession=run_accession,
                detail=detail or {},
                synced_at=self.synced_at,
            )
        )

    def compare(self, run_accession: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        differ = {
            name: {"before": before[name], "after": after[name]}
            for name in before
            if before[name] != after[name]
        }
        if differ:
            self._add(StudyChange.Kind.METADATA_CHANGED, run_accession, differ)

    def run(self, accession: str, known: Run | None, values: dict[str, Any]) -> None:
        if known is None:
            self.added.add(accession)
            self._add(StudyChange.Kind.RUN_ADDED, accession)
            return
        if known.withdrawn_at is not None:
            self._add(
                StudyChange.Kind.RUN_RESTORED, accession, {"withdrawn_at": known.withdrawn_at.isoformat()}
            )
        if list(known.fastq_md5) != values["fastq_md5"]:
            self._add(
                StudyChange.Kind.CHECKSUMS_CHANGED,
                accession,
                {"fastq_md5": {"before": list(known.fastq_md5), "after": values["fastq_md5"]}},
            )
        self.compare(
            accession,
            {name: getattr(known, name) for name in _RUN_FIELDS},
            {name: values[name] for name in _RUN_FIELDS},
        )

    def write(self, *, withdrawn: list[Run]) -> int:
        """The entries, and the runs ENA no longer lists marked withdrawn (kept, with their analyses)."""
        for run in withdrawn:
            self._add(StudyChange.Kind.RUN_WITHDRAWN, run.accession)
        Run.objects.filter(pk__in=[run.pk for run in withdrawn]).update(withdrawn_at=self.synced_at)
        StudyChange.objects.bulk_create(self.entries)
        return len(self.entries)


def _serialise_syncs_of(accession: str) -> None:
    """One sync of a study at a time, until the transaction ends: the first passes of requests on one new study
    each inserted it, and all but one failed on its unique accession (8 at once in scenario b of bench/scale.py).
    On SQLite (demo only) writes serialise anyway."""
    if is_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_SYNC_NAMESPACE, accession])
