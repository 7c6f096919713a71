from django.dispatch import Signal

# Sent (with `request=`) when a request is cancelled; the workflow layer stops its flow run and jobs.
request_cancelled = Signal()
