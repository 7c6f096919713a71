import time

from django.core.management.base import BaseCommand, CommandError
from prefect.exceptions import ObjectNotFound

from workflows.outbox import deployments
from workflows.outbox.prefect_api import prefect_client
from workflows.pipelines.registry import FLOWS


def unserved_deployments() -> list[str]:
    """This environment's deployments that are not registered, or paused (their runner stopped)."""
    missing = []
    with prefect_client(timeout=5) as client:
        for name in FLOWS:
            scoped = deployments.in_this_environment(name)
            try:
                if client.read_deployment_by_name(scoped).paused:
                    missing.append(f"{scoped} (paused)")
            except ObjectNotFound:
                missing.append(scoped)
    return missing


class Command(BaseCommand):
    help = (
        "Wait until serve_flows has registered this environment's deployments; exit 1 if it has not in time."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--timeout", type=float, default=60)

    def handle(self, *args, timeout: float, **options) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                missing = unserved_deployments()
            except Exception as exc:  # Prefect not answering yet is one more reason to wait
                missing = [f"Prefect: {type(exc).__name__}: {exc}"]
            if not missing:
                self.stdout.write(f"Served in environment {deployments.environment()!r}: {', '.join(FLOWS)}")
                return
            if time.monotonic() >= deadline:
                raise CommandError(f"Not served after {timeout:g} s: {'; '.join(missing)}")
            time.sleep(1)  # polling Prefect's API: there is no event to wait on
