"""Model saves become flow runs, through the outbox: never lost, never sent twice."""

from django.db.models.signals import post_save
from django.dispatch import receiver

from analyses.models import AssemblyAnalysisRequest, Study
from analyses.signals import request_cancelled, request_reviewed
from workflows.outbox import deployments
from workflows.outbox.dispatch import enqueue_trigger
from workflows.outbox.wakeup import wake_service_loops


@receiver(post_save, sender=AssemblyAnalysisRequest, dispatch_uid="workflows.request_created")
def request_created(
    sender, instance: AssemblyAnalysisRequest, created: bool, raw: bool = False, **kwargs
) -> None:
    if not created or raw:
        return
    enqueue_trigger(
        instance,
        deployment=deployments.ASSEMBLY_ANALYSIS,
        parameters={"request_id": instance.pk},
    )


@receiver(post_save, sender=Study, dispatch_uid="workflows.study_created")
def study_created(sender, instance: Study, created: bool, raw: bool = False, **kwargs) -> None:
    # A study created by a sync from ENA (a request's flow) is already in sync.
    if not created or raw or instance.last_synced_with_ena is not None:
        return
    enqueue_trigger(
        instance,
        deployment=deployments.STUDY_SYNC,
        parameters={"study_id": instance.pk},
    )


@receiver(request_cancelled, dispatch_uid="workflows.request_cancelled")
def request_was_cancelled(sender, request: AssemblyAnalysisRequest, **kwargs) -> None:
    # The cancelled status is the durable intent. A woken service loop carries it out at once, and the sweep
    # retries it until Slurm confirms every job over; the request thread never waits on Slurm or Prefect.
    wake_service_loops()


@receiver(request_reviewed, dispatch_uid="workflows.request_reviewed")
def request_was_reviewed(sender, request: AssemblyAnalysisRequest, **kwargs) -> None:
    # The decision is recorded; a woken service loop resumes the suspended flow run (the sweep, if that is lost).
    wake_service_loops()
