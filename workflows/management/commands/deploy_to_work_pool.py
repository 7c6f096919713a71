from django.core.management.base import BaseCommand

from workflows.outbox import deployments


class Command(BaseCommand):
    help = (
        "Register this environment's deployments on a Prefect process work pool (created if missing), for sites "
        "whose flow runs are executed by `prefect worker start --pool <pool>` beside `manage.py service_loop` "
        "rather than by serve_flows. The workers need this checkout (their working directory) and the service's "
        "environment (DATABASE_URL, SECRET_KEY, ...)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--pool",
            default=None,
            help="The work pool (default: emgapi-<environment>, so that environments never share one).",
        )

    def handle(self, *args, pool: str | None = None, **options) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.exceptions import ObjectNotFound

        from workflows.pipelines.registry import runner_deployments

        pool = pool or deployments.work_pool_name()
        with get_client(sync_client=True) as client:
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        for deployment in runner_deployments(work_pool=pool):
            deployment.apply()
            self.stdout.write(f"Registered {deployment.flow_name}/{deployment.name} on work pool {pool!r}")
