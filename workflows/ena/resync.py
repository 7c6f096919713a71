"""Studies kept in sync with ENA: a watched study's new runs become an incremental request, and the scheduled
re-sync goes over the studies due, oldest sync first, in a batch paced for ENA's rate limits."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from analyses.models import Study
from analyses.services import create_assembly_analysis_request
from workflows.ena.client import EnaClient, EnaStudyNotFound
from workflows.ena.runs import RunCheck
from workflows.ena.study_sync import SyncResult, sync_study

logger = logging.getLogger(__name__)


def sync_and_follow(study: Study, client: EnaClient, *, check_run: RunCheck) -> SyncResult:
    """Sync `study`; if someone watches it and the sync found new usable runs, start their incremental request."""
    result = sync_study(study.ena_accession, client, check_run=check_run)
    if result.changes:
        logger.info("Study %s: %d change(s) since its last sync", study.ena_accession, result.changes)
    synced = Study.objects.select_related("watched_by").get(pk=result.study_id)
    if result.added and synced.watched_by is not None:
        request = create_assembly_analysis_request(
            study_accession=synced.ena_accession,
            requester=synced.watched_by,
            # Beside any request of the watcher's for the study: this one is of other runs.
            force=True,
            runs=result.added,
        )
        logger.info(
            "Study %s is watched: request %s started for its %d new run(s) (%s)",
            study.ena_accession,
            request.pk,
            len(result.added),
            ", ".join(result.added[:10]) + (" …" if len(result.added) > 10 else ""),
        )
    return result


@dataclass
class ResyncReport:
    synced: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # accession -> why
    changes: int = 0
    new_runs: int = 0


def due_studies(limit: int) -> list[int]:
    """The studies whose last sync is older than ENA_RESYNC_MIN_AGE_HOURS (never synced first), oldest first."""
    due_before = timezone.now() - timedelta(hours=settings.ENA_RESYNC_MIN_AGE_HOURS)
    return list(
        Study.objects.filter(Q(last_synced_with_ena__isnull=True) | Q(last_synced_with_ena__lt=due_before))
        .order_by("last_synced_with_ena", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def resync_due_studies(
    client: EnaClient, *, check_run: RunCheck, sleep: Callable[[float], None] = time.sleep
) -> ResyncReport:
    """One batch of the scheduled re-sync: ENA_RESYNC_BATCH due studies, ENA_RESYNC_PAUSE_SECONDS apart (each
    study is two portal API calls; ENA asks for no more than 50 a second). A study ENA no longer has, or that
    fails, is reported and the batch goes on; the next batch takes up what this one did not reach."""
    report = ResyncReport()
    for position, study in enumerate(Study.objects.filter(pk__in=due_studies(settings.ENA_RESYNC_BATCH))):
        if position:
            sleep(settings.ENA_RESYNC_PAUSE_SECONDS)
        try:
            result = sync_and_follow(study, client, check_run=check_run)
        except EnaStudyNotFound as exc:
            report.failed[study.ena_accession] = str(exc)
            logger.warning("Study %s: not in ENA any more: %s", study.ena_accession, exc)
            continue
        except Exception as exc:  # one study's failure (ENA down for it, bad data) must not stop the batch
            report.failed[study.ena_accession] = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "Study %s: sync failed: %s", study.ena_accession, report.failed[study.ena_accession]
            )
            continue
        report.synced.append(study.ena_accession)
        report.changes += result.changes
        report.new_runs += len(result.added)
    return report
