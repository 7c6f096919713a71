from django.core.management.base import BaseCommand, CommandError

from workflows.orchestration.recovery import sweep


class Command(BaseCommand):
    help = (
        "One round of recovery by hand: resume, reschedule or restart the flow runs of unfinished requests, "
        "and carry out pending cancellations (serve_flows does this every WORKFLOWS_SWEEP_INTERVAL_SECONDS)."
    )

    def handle(self, *args, **options) -> None:
        report = sweep()
        if report.skipped:
            # Not an empty round: saying "none" four times here would tell an operator nothing needed doing.
            raise CommandError("Another process is sweeping (the service loop): nothing done; try again.")
        for action in ("resumed", "rescheduled", "restarted", "cancelled"):
            self.stdout.write(f"{action}: {getattr(report, action) or 'none'}")
