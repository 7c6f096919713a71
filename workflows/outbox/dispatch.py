"""The trigger outbox: enqueue in the caller's transaction, dispatched by the service loops, retried with backoff."""

import logging
import uuid
from datetime import timedelta

from django.db import models, transaction
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest, Study
from analyses.services import record_request_state
from workflows.models import Trigger
from workflows.outbox import deployments, prefect_api
from workflows.outbox.wakeup import wake_service_loops
from workflows.selectors import due_triggers, source_label

logger = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(minutes=5)


def enqueue_trigger(
    obj: models.Model,
    *,
    deployment: str,
    parameters: dict,
    generation: int = 1,
) -> Trigger:
    """Write the trigger row now (same transaction as `obj`); a service loop dispatches it once that commits.

    The caller (an HTTP request, an admin save) never waits on Prefect: it only wakes the service loops.

    The idempotency key is fixed on the trigger row, so however often the dispatch is retried, Prefect creates
    one flow run. It names the row and carries a random part too: primary keys start again in a new database
    (a restored backup, a test run) while Prefect never forgets a key, and a reused one would hand back some
    old flow run. `generation` numbers deliberate re-triggers of the same object.
    """
    key = f"{deployments.environment()}:{source_label(obj)}:{deployment}:gen{generation}:{uuid.uuid4().hex}"
    trigger = Trigger.objects.create(
        idempotency_key=key,
        deployment_name=deployment,
        parameters=parameters,
        source=source_label(obj),
        flow_run_name=flow_run_name(obj, generation),
    )
    wake_service_loops()
    return trigger


def flow_run_name(obj: models.Model, generation: int = 1) -> str:
    """What the Prefect UI calls the flow run of `obj`: `request-5-PRJEB00001` (`-2` for its second flow run),
    `study-PRJEB00001`; Prefect's random names ("aggressive-quokka") say nothing of whose run it is."""
    if isinstance(obj, AssemblyAnalysisRequest):
        name = f"request-{obj.pk}-{obj.study_accession}"
    elif isinstance(obj, Study):
        name = f"study-{obj.ena_accession or obj.accession}"
    else:
        name = f"{obj._meta.model_name}-{obj.pk}"
    return (name if generation == 1 else f"{name}-{generation}")[:100]


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=2**attempts), MAX_BACKOFF)


def dispatch_trigger(trigger_id: int) -> Trigger | None:
    """Send one pending trigger to Prefect; on any failure leave it pending with its next attempt time."""
    with transaction.atomic():
        # skip_locked: a dispatcher already sending this trigger owns it; nobody waits behind it.
        trigger = (
            Trigger.objects.select_for_update(skip_locked=True)
            .filter(pk=trigger_id, status=Trigger.Status.PENDING)
            .first()
        )
        if trigger is None:
            return None
        trigger.attempts += 1
        try:
            # The trigger keeps the base name: this environment's deployment is resolved when it is sent.
            flow_run_id = prefect_api.create_flow_run(
                deployments.in_this_environment(trigger.deployment_name),
                {**trigger.parameters, "environment": deployments.environment()},
                idempotency_key=trigger.idempotency_key,
                name=trigger.flow_run_name or None,
                tags=[trigger.source, deployments.environment_tag()],
            )
        except Exception as exc:  # Prefect down, slow, or not serving the deployment yet: all retried later
            trigger.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            trigger.next_attempt_at = timezone.now() + backoff(trigger.attempts)
            trigger.save(update_fields=["attempts", "last_error", "next_attempt_at"])
            logger.warning(
                "Dispatch of %s failed (attempt %d): %s", trigger, trigger.attempts, trigger.last_error
            )
            return trigger
        trigger.flow_run_id = flow_run_id
        trigger.status = Trigger.Status.DISPATCHED
        trigger.dispatched_at = timezone.now()
        trigger.last_error = ""
        trigger.save(update_fields=["attempts", "flow_run_id", "status", "dispatched_at", "last_error"])
        _record_flow_run_on_source(trigger)
    logger.info("Dispatched %s as flow run %s", trigger, flow_run_id)
    return trigger


def _record_flow_run_on_source(trigger: Trigger) -> None:
    label, _, pk = trigger.source.rpartition(":")
    if label == AssemblyAnalysisRequest._meta.label_lower:
        record_request_state(int(pk), metadata={"flow_run_id": trigger.flow_run_id})


def dispatch_pending_triggers(limit: int = 100) -> int:
    """Dispatch every due trigger; returns how many reached Prefect."""
    sent = 0
    for trigger_id in due_triggers().order_by("created").values_list("pk", flat=True)[:limit]:
        trigger = dispatch_trigger(trigger_id)
        sent += bool(trigger and trigger.status == Trigger.Status.DISPATCHED)
    return sent
