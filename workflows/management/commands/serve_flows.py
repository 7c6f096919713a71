import logging
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from workflows.dispatch import dispatch_pending_triggers
from workflows.services import reattach_flows

logger = logging.getLogger(__name__)


def dispatcher_loop(stop: threading.Event, interval: float) -> None:
    """Retry pending triggers and reschedule crashed flow runs, for as long as the flows are served."""
    while not stop.wait(interval):
        close_old_connections()
        for job in (dispatch_pending_triggers, reattach_flows):
            try:
                job()
            except Exception:  # one bad round (Prefect restarting, say) must not end the loop
                logger.exception("%s failed; retrying next round", job.__name__)


class Command(BaseCommand):
    help = "Serve every registered deployment (Prefect `serve`) and run the trigger dispatcher beside it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-dispatcher", action="store_true", help="Serve the flows only.")
        parser.add_argument(
            "--limit", type=int, default=None, help="At most this many flow runs at once in this process."
        )

    def handle(self, *args, no_dispatcher: bool = False, limit: int | None = None, **options) -> None:
        from prefect import serve

        from workflows.flows import FLOWS

        served = [
            flow.to_deployment(
                # A runner that stops pauses its deployments; a new one must resume them or nothing runs.
                name=deployment_name,
                tags=["emgapi"],
                description=flow.description,
                paused=False,
                concurrency_limit=settings.WORKFLOWS_CONCURRENCY_LIMITS.get(full_name),
            )
            for full_name, (flow, deployment_name) in FLOWS.items()
        ]
        if not no_dispatcher:
            stop = threading.Event()
            threading.Thread(
                target=dispatcher_loop,
                args=(stop, settings.WORKFLOWS_DISPATCH_INTERVAL_SECONDS),
                name="trigger-dispatcher",
                daemon=True,
            ).start()
        self.stdout.write(f"Serving {', '.join(FLOWS)}")
        serve(*served, limit=limit)
