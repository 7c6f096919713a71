import threading
from typing import cast

from django.conf import settings
from django.core.management.base import BaseCommand

from workflows.orchestration.service_loop import run_service_loop
from workflows.outbox import deployments


class Command(BaseCommand):
    help = (
        "Serve every registered deployment (Prefect `serve`) and, beside it, the service loop: the trigger "
        "dispatcher, the shared Slurm poller that resumes suspended flow runs, and the recovery sweep."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-service-loop", action="store_true", help="Serve the flows only.")
        parser.add_argument(
            "--limit", type=int, default=None, help="At most this many flow runs at once in this process."
        )

    def handle(self, *args, no_service_loop: bool = False, limit: int | None = None, **options) -> None:
        from prefect import serve
        from prefect.deployments.runner import RunnerDeployment

        from workflows.pipelines.registry import FLOWS

        # Called outside an event loop, to_deployment returns the deployment (its type says "or a coroutine").
        served = [
            cast(
                RunnerDeployment,
                flow.to_deployment(
                    # A runner that stops pauses its deployments; a new one must resume them or nothing runs.
                    name=deployments.served_deployment_name(deployment_name),
                    tags=["emgapi", deployments.environment_tag()],
                    description=flow.description,
                    paused=False,
                    concurrency_limit=settings.WORKFLOWS_CONCURRENCY_LIMITS.get(full_name),
                ),
            )
            for full_name, (flow, deployment_name) in FLOWS.items()
        ]
        stop = threading.Event()
        loop = threading.Thread(target=run_service_loop, args=(stop,), name="service-loop", daemon=True)
        if not no_service_loop:
            loop.start()
        self.stdout.write(
            f"Serving {', '.join(deployments.in_this_environment(name) for name in FLOWS)} "
            f"(environment {deployments.environment()!r})"
        )
        try:
            serve(*served, limit=limit)
        finally:
            # A graceful stop hands the poller lease on at once instead of leaving it to expire.
            stop.set()
            if loop.is_alive():
                loop.join(timeout=10)
