from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        from emgapi.health import CHECKS
        from workflows import health, signals  # noqa: F401  (connects the receivers)

        CHECKS.update(health.CHECKS)
