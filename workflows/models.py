from django.db import models

from analyses.models import AssemblyAnalysisRequest

JOB_STATES = [
    ("NEW", "new (not yet submitted)"),
    ("PENDING", "pending"),
    ("RUNNING", "running"),
    ("COMPLETED", "completed"),
    ("FAILED", "failed"),
    ("TIMEOUT", "timeout"),
    ("OUT_OF_MEMORY", "out of memory"),
    ("NODE_FAIL", "node fail"),
    ("PREEMPTED", "preempted"),
    ("CANCELLED", "cancelled"),
    ("UNKNOWN", "unknown"),
]
TERMINAL_JOB_STATES = frozenset(
    {"COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "CANCELLED"}
)


class ClusterJob(models.Model):
    """The ledger: one row per (submission key, attempt); the source of truth for what was submitted to Slurm."""

    key = models.CharField(max_length=64, help_text="Hash of the canonical job spec and its input files.")
    attempt = models.PositiveSmallIntegerField(default=1)
    name = models.CharField(max_length=200, blank=True)
    spec = models.JSONField(help_text="The canonical job spec this attempt was submitted with.")
    input_hashes = models.JSONField(default=dict, blank=True)
    previous_attempt = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="next_attempt"
    )
    slurm_job_id = models.CharField(max_length=32, null=True, blank=True, db_index=True)
    state = models.CharField(max_length=16, choices=JOB_STATES, default="NEW")
    slurm_state = models.CharField(
        max_length=64, blank=True, help_text="The state exactly as Slurm reported it."
    )
    reason = models.CharField(max_length=255, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    state_stale = models.BooleanField(
        default=False, help_text="The controller could not be reached at the last poll: the state may be old."
    )
    state_checked_at = models.DateTimeField(null=True, blank=True)
    log_tail = models.TextField(blank=True)
    cancellation = models.CharField(max_length=255, blank=True, help_text="Why we scancelled it, if we did.")
    flow_run_id = models.CharField(max_length=64, blank=True, db_index=True)
    request = models.ForeignKey(
        AssemblyAnalysisRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="cluster_jobs"
    )
    labels = models.JSONField(default=dict, blank=True)
    submitted_at = models.DateTimeField(
        null=True, blank=True, db_index=True
    )  # the submit rate limit counts these
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(fields=["key", "attempt"], name="cluster_job_key_attempt_unique")
        ]
        indexes = [
            # The poller's one query: every submitted job that has not reached a terminal state.
            models.Index(
                fields=["state"],
                name="cluster_job_active_idx",
                condition=models.Q(slurm_job_id__isnull=False)
                & ~models.Q(state__in=sorted(TERMINAL_JOB_STATES)),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.key[:12]} attempt {self.attempt} ({self.slurm_job_id or 'unsubmitted'})"

    @property
    def submission_key(self) -> str:
        return f"{self.key}-{self.attempt}"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_JOB_STATES


class PollerLease(models.Model):
    """Who polls Slurm for the whole service, until when: taken by compare-and-set, so no daemon is needed."""

    name = models.CharField(max_length=50, primary_key=True)
    holder = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_poll_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    polls = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder or 'nobody'} until {self.expires_at}"


class Trigger(models.Model):
    """The outbox: a flow run to start, written in the same transaction as the row that asked for it."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DISPATCHED = "dispatched"

    deployment_name = models.CharField(max_length=200)
    parameters = models.JSONField(default=dict)
    idempotency_key = models.CharField(
        max_length=200,
        unique=True,
        help_text="Sent to Prefect: a retried dispatch returns the same flow run.",
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    flow_run_id = models.CharField(max_length=64, blank=True, db_index=True)
    source = models.CharField(max_length=100, help_text="model label and primary key, e.g. analyses.study:4")
    created = models.DateTimeField(auto_now_add=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="trigger_due_idx")]

    def __str__(self) -> str:
        return f"{self.deployment_name} for {self.source} ({self.status})"
