from django.core.management.base import BaseCommand

from workflows.outbox.dispatch import dispatch_pending_triggers
from workflows.selectors import due_triggers


class Command(BaseCommand):
    help = "Send every due pending trigger to Prefect (same idempotency key on every retry)."

    def handle(self, *args, **options) -> None:
        due = due_triggers().count()
        sent = dispatch_pending_triggers()
        self.stdout.write(f"{sent} of {due} due trigger(s) dispatched")
