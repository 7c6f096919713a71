from django.dispatch import Signal

# Sent (with `request=`) when a request is cancelled; the workflow layer stops its flow run and jobs.
request_cancelled = Signal()

# Sent (with `request=`) when a request awaiting approval is approved or rejected; the workflow layer resumes its
# suspended flow run, which goes on (approved) or ends (rejected).
request_reviewed = Signal()
