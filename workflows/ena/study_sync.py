"""Bring a study's ENA metadata into the archive, and gate its runs before any cluster work (data QA)."""

from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from analyses.models import Run, Sample, Study
from workflows.ena.client import EnaClient
from workflows.ena.runs import RunCheck, run_inputs_from_ena
from workflows.pg import is_postgres

# First half of a two-int advisory key ("EMY"), apart from the request, capacity and sweep locks' namespaces.
_SYNC_NAMESPACE = 0x454D59


@dataclass(frozen=True)
class SyncResult:
    study_id: int
    usable_run_ids: list[int]
    rejected: dict[str, str]  # run accession -> why it cannot be processed


def sync_study(accession: str, client: EnaClient, *, check_run: RunCheck) -> SyncResult:
    """Create or update the Study, its Samples and Runs from ENA; record ``check_run``'s QA verdict on each run.

    The gate is the pipeline's (its protocol's ``check_run``): what is usable depends on what will run on it.
    """
    ena_study = client.fetch_study(accession)
    ena_runs = client.fetch_read_runs(ena_study.study_accession)
    usable: list[int] = []
    rejected: dict[str, str] = {}
    with transaction.atomic():
        _serialise_syncs_of(ena_study.study_accession)
        study = Study.objects.filter(
            Q(ena_accession=ena_study.study_accession)
            | Q(ena_accession=accession)
            | Q(secondary_ena_accession=accession)
        ).first() or Study(ena_accession=ena_study.study_accession)
        study.ena_accession = ena_study.study_accession
        study.secondary_ena_accession = ena_study.secondary_study_accession or ""
        study.title = ena_study.title[:500]
        study.description = ena_study.description
        study.last_synced_with_ena = timezone.now()
        study.save()
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
            run, _ = Run.objects.update_or_create(
                accession=ena_run.run_accession,
                defaults={
                    "study": study,
                    "sample": sample,
                    "instrument_platform": ena_run.instrument_platform,
                    "instrument_model": ena_run.instrument_model,
                    "library_strategy": ena_run.library_strategy,
                    "library_source": ena_run.library_source,
                    "library_layout": ena_run.library_layout,
                    "fastq_urls": list(inputs.fastq_urls if inputs else ena_run.fastq_urls),
                    "fastq_md5": list(inputs.fastq_md5 if inputs else ena_run.fastq_md5),
                    "read_count": ena_run.read_count,
                    "base_count": ena_run.base_count,
                    "qa_status": Run.QaStatus.PASSED if reason is None else Run.QaStatus.FAILED,
                    "qa_reason": reason or "",
                },
            )
            if reason is None:
                usable.append(run.pk)
            else:
                rejected[run.accession] = reason
    return SyncResult(study.pk, usable, rejected)


def _serialise_syncs_of(accession: str) -> None:
    """One sync of a study at a time, until the transaction ends: the first passes of requests on one new study
    each inserted it, and all but one failed on its unique accession (8 at once in scenario b of bench/scale.py).
    On SQLite (demo only) writes serialise anyway."""
    if is_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_SYNC_NAMESPACE, accession])
