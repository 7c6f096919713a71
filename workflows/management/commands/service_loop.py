import logging
import signal
import threading

from django.core.management.base import BaseCommand

from workflows.orchestration.service_loop import run_service_loop

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Run the service loop alone (trigger dispatcher, Slurm poller that resumes suspended flow runs, recovery "
        "sweep), for sites whose flow runs are executed by Prefect workers rather than by serve_flows."
    )

    def handle(self, *args, **options) -> None:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        logger.info("Service loop running; SIGTERM or Ctrl-C stops it")
        try:
            run_service_loop(stop)
        except KeyboardInterrupt:
            stop.set()
