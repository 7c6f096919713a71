from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        from analyses.resources import STEP_NAMES
        from emgapi.health import CHECKS
        from workflows import signals  # noqa: F401  (connects the receivers)
        from workflows.operations import health
        from workflows.pipelines.analysis.pipeline import all_step_names

        CHECKS.update(health.CHECKS)
        STEP_NAMES.append(all_step_names)
