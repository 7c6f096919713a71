from django.core.management.base import BaseCommand

from workflows.services import reattach_flows


class Command(BaseCommand):
    help = "Reschedule flow runs that crashed or went silent while their request was in progress."

    def handle(self, *args, **options) -> None:
        rescheduled = reattach_flows()
        self.stdout.write(f"Rescheduled the flow runs of request(s): {rescheduled or 'none'}")
