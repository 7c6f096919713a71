from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        from emgapi.health import CHECKS
        from workflows import signals  # noqa: F401  (connects the receivers)
        from workflows.operations import health

        CHECKS.update(health.CHECKS)
