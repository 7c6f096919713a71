import logging
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from workflows.orchestration.service_loop import run_service_loop
from workflows.outbox import deployments

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Serve every registered deployment (Prefect `serve`) and, beside it, the service loop: the trigger "
        "dispatcher, the shared Slurm poller that resumes suspended flow runs, and the recovery sweep."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-service-loop", action="store_true", help="Serve the flows only.")
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help="At most this many flow-run processes at once (default: WORKFLOWS_MAX_FLOW_PROCESSES). Runs "
            "beyond it wait in Prefect, SCHEDULED, and start as others suspend or end.",
        )

    def handle(self, *args, no_service_loop: bool = False, limit: int | None = None, **options) -> None:
        from prefect_utils.serving import serve_deployments
        from workflows.pipelines.registry import FLOWS, runner_deployments

        served = runner_deployments()
        stop = threading.Event()
        loop = threading.Thread(target=run_service_loop, args=(stop,), name="service-loop", daemon=True)
        if not no_service_loop:
            loop.start()
        logger.info(
            "Serving %s (environment %r)",
            ", ".join(deployments.in_this_environment(name) for name in FLOWS),
            deployments.environment(),
        )
        try:
            serve_deployments(served, limit=limit or settings.WORKFLOWS_MAX_FLOW_PROCESSES)
        finally:
            # A graceful stop hands the poller lease on at once instead of leaving it to expire.
            stop.set()
            if loop.is_alive():
                loop.join(timeout=10)
