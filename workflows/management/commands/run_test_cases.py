from django.core.management.base import BaseCommand, CommandError

from workflows.management.commands.wait_for_deployments import unserved_deployments
from workflows.operations import case_runner
from workflows.operations import cases as pipeline_cases


class Command(BaseCommand):
    help = (
        "Run the deployments' end-to-end test cases (workflows/pipelines/*/test-cases.yaml) against the running "
        "stack (make run): print a table of case, verdict, seconds and expected vs observed; exit 1 on any "
        "mismatch or unexpected ERROR line in a flow run's log."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "pipeline", nargs="?", help="Only this pipeline's cases: its directory (assembly, study_sync)."
        )
        parser.add_argument("--case", action="append", default=[], help="Only this case (repeatable).")
        parser.add_argument("--list", action="store_true", dest="list_cases", help="List the cases and exit.")

    def handle(self, *args, pipeline: str | None, case: list[str], list_cases: bool, **options) -> None:
        try:
            cases = pipeline_cases.select_cases(pipeline_cases.all_cases(), pipeline, case)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if list_cases:
            for item in cases:
                self.stdout.write(f"{item.label}: {item.description}")
            return
        missing = unserved_deployments()
        if missing:
            raise CommandError(f"Not served, is `make run` up? {'; '.join(missing)}")
        self.stdout.write(f"Running {len(cases)} case(s) together; each ends by its own timeout_seconds.")
        outcomes = case_runner.run_cases(cases, say=self.stdout.write)
        self.stdout.write("")
        self.stdout.write(pipeline_cases.format_table(outcomes))
        failed = [outcome for outcome in outcomes if not outcome.passed]
        if failed:
            raise CommandError(f"{len(failed)} of {len(outcomes)} case(s) did not pass")
        self.stdout.write(self.style.SUCCESS(f"All {len(outcomes)} case(s) passed."))
