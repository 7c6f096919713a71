from django.db import models

from analyses.models import AssemblyAnalysisRequest, Run
from prefect_utils.keys import submission_key
from prefect_utils.states import TERMINAL_STATES, JobState

# The choices are JobState's (plain strings, so migrations do not import prefect_utils); only NEW reads otherwise.
_JOB_STATE_LABELS = {JobState.NEW: "new (not yet submitted)"}
JOB_STATES = [
    (state.value, _JOB_STATE_LABELS.get(state, state.value.lower().replace("_", " "))) for state in JobState
]


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
    # NULL, not "": "never submitted" is what the poller's partial index and the adoption lookups test for.
    slurm_job_id = models.CharField(max_length=32, null=True, blank=True, db_index=True)  # noqa: DJ001
    state = models.CharField(max_length=16, choices=JOB_STATES, default=JobState.NEW.value)
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
    state_changed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the poller last saw the state change (resume and recovery use it).",
    )
    cancellation = models.CharField(max_length=255, blank=True, help_text="Why we scancelled it, if we did.")
    claim = models.CharField(
        max_length=32,
        blank=True,
        help_text="The submission batch that created the row: a row claimed by another batch and left without a "
        "job id is looked up in Slurm before anything is submitted for it.",
    )
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
                & ~models.Q(state__in=sorted(state.value for state in TERMINAL_STATES)),
            ),
            # Rows claimed and not yet submitted: they hold a slot of the capacity (SlurmJobs.capacity).
            models.Index(
                fields=["state"], name="cluster_job_claimed_idx", condition=models.Q(state=JobState.NEW.value)
            ),
            # A request's jobs in the order every list shows them (workflows.selectors.request_jobs): a page of
            # a 20,000-job request is an index range, not a sort of all 20,000, and its keys (id) an index-only
            # read. The id is a key column, not only included: it breaks ties, and a cursor seeks along it.
            models.Index(
                fields=["request", "created", "attempt", "id"], name="cluster_job_request_order_idx"
            ),
            # Every job in that order: the staff's jobs list and the admin's changelist (read backwards), which
            # otherwise sort the whole ledger for each page.
            models.Index(fields=["created", "attempt", "id"], name="cluster_job_order_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.key[:12]} attempt {self.attempt} ({self.slurm_job_id or 'unsubmitted'})"

    @property
    def submission_key(self) -> str:
        return submission_key(self.key, self.attempt)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


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
    flow_run_name = models.CharField(
        max_length=100,
        blank=True,
        help_text="What the Prefect UI calls its flow run, e.g. request-5-PRJEB00001.",
    )
    source = models.CharField(max_length=100, help_text="model label and primary key, e.g. analyses.study:4")
    created = models.DateTimeField(auto_now_add=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="trigger_due_idx")]

    def __str__(self) -> str:
        return f"{self.deployment_name} for {self.source} ({self.status})"


class Plan(models.Model):
    """A request's work, frozen when its first flow pass made it: every rerun reads it, nothing rebuilds it.

    A new plan (retry, re-plan with a new pipeline version) is a new generation; older ones stay as they were.
    """

    request = models.ForeignKey(AssemblyAnalysisRequest, on_delete=models.CASCADE, related_name="plans")
    generation = models.PositiveIntegerField(default=1)
    pipeline = models.CharField(max_length=50)
    pipeline_version = models.CharField(max_length=20)
    uid = models.CharField(
        max_length=32, unique=True, help_text="Random: names the work directory, so no two plans share files."
    )
    rejected = models.JSONField(
        default=dict, blank=True, help_text="Runs that data QA turned away when the plan was made, with why."
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "-generation"]
        constraints = [
            models.UniqueConstraint(fields=["request", "generation"], name="plan_unique_generation")
        ]

    def __str__(self) -> str:
        return (
            f"Plan {self.generation} of request {self.request_id} ({self.pipeline} {self.pipeline_version})"
        )


class PlanStep(models.Model):
    """One (run, step) of a plan: the frozen job spec, its inputs and policy, and the submission key of both."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="steps")
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    run_accession = models.CharField(max_length=20)
    step = models.CharField(max_length=50)
    pipeline = models.CharField(
        max_length=50, blank=True, help_text="The pipeline of the run's route this step belongs to."
    )
    # A smallint held 32,767 steps: a 5,000-run study routed through a chain of nine steps a run has 45,000.
    position = models.PositiveIntegerField()
    when = models.TextField(
        blank=True,
        help_text="The step runs only if this holds on the run's recorded metrics (else: skipped).",
    )
    metrics = models.JSONField(
        default=list,
        blank=True,
        help_text="What the step's outputs record once it completed (named parsers).",
    )
    depends_on = models.JSONField(
        default=list, blank=True, help_text="Steps of the same run that must complete."
    )
    spec = models.JSONField(help_text="The canonical job spec, as frozen in the plan.")
    inputs = models.JSONField(default=dict, blank=True, help_text="Input file -> checksum.")
    policy = models.JSONField(default=dict, blank=True, help_text="The resubmit policy, frozen too.")
    key = models.CharField(
        max_length=64, help_text="Submission key of the spec and inputs (the ledger's key)."
    )
    first_attempt = models.PositiveSmallIntegerField(
        default=1, help_text="Attempts before this one belong to an earlier generation of the plan (a retry)."
    )
    batch_max_runs = models.PositiveIntegerField(
        default=0,
        help_text="Up to this many runs' step in one Slurm job (a StepBatch); 0: a job of its own.",
    )

    class Meta:
        ordering = ["plan", "run_accession", "position"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "run_accession", "step"], name="plan_step_unique")
        ]
        # A job's step and run are looked up by its key (workflows.selectors.jobs_with_step_and_run); without
        # it, each job of a page scanned all of its plan's steps (20,000 for a 5,000-run study).
        indexes = [models.Index(fields=["key"], name="plan_step_key_idx")]

    def __str__(self) -> str:
        return f"{self.step} of {self.run_accession} (plan {self.plan_id})"


class StepBatch(models.Model):
    """One job for one step of several runs of a request: the runs that were ready together, frozen when the
    batch was formed, so a rerun submits (or reattaches to) the same job. Its key covers its members."""

    request = models.ForeignKey(
        AssemblyAnalysisRequest, on_delete=models.CASCADE, related_name="step_batches"
    )
    pipeline = models.CharField(max_length=50, blank=True)
    step = models.CharField(max_length=50)
    members = models.JSONField(
        help_text="Run accession -> the first attempt of its step when it joined (a retry starts a new one)."
    )
    label = models.CharField(max_length=100, help_text="Its runs, as the jobs table shows them.")
    spec = models.JSONField(help_text="The canonical job spec of the batch (prefect_utils.batch).")
    policy = models.JSONField(
        default=dict, blank=True, help_text="The step's resubmit policy, for the batch."
    )
    key = models.CharField(max_length=64, unique=True, help_text="The ledger's key of the batch's job.")
    statuses = models.JSONField(
        default=dict, blank=True, help_text="Run accession -> what the job's status file says of it."
    )
    statuses_attempt = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The attempt whose status file `statuses` was read from."
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "created", "id"]
        indexes = [models.Index(fields=["request", "step"], name="step_batch_request_idx")]

    def __str__(self) -> str:
        return f"{self.step} of {len(self.members)} run(s) (request {self.request_id})"


class StepOutcome(models.Model):
    """What one (run, step) of a request left besides its job: the metrics its outputs recorded, or why it was
    skipped. Written once: a `when:` decides on these figures, so a rerun decides as the first pass did."""

    request = models.ForeignKey(
        AssemblyAnalysisRequest, on_delete=models.CASCADE, related_name="step_outcomes"
    )
    run_accession = models.CharField(max_length=20)
    step = models.CharField(max_length=50)
    pipeline = models.CharField(max_length=50, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    skipped = models.TextField(blank=True, help_text="Why the step did not run (its `when:` did not hold).")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "run_accession", "created"]
        constraints = [
            models.UniqueConstraint(fields=["request", "run_accession", "step"], name="step_outcome_unique")
        ]

    def __str__(self) -> str:
        return f"{self.step} of {self.run_accession}: " + (
            f"skipped ({self.skipped})" if self.skipped else "ran"
        )


class RequestProgress(models.Model):
    """What the orchestration knows of one request beyond its status: passes, resumes, recoveries, cancel."""

    request = models.OneToOneField(
        AssemblyAnalysisRequest, primary_key=True, on_delete=models.CASCADE, related_name="progress"
    )
    passes = models.PositiveIntegerField(default=0)
    last_pass_started_at = models.DateTimeField(null=True, blank=True)
    last_pass_ended_at = models.DateTimeField(null=True, blank=True)
    last_read_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the last pass read the ledger: a job that changed later needs a pass.",
    )
    last_outcome = models.CharField(max_length=200, blank=True)
    resumes = models.PositiveIntegerField(default=0)
    last_resumed_at = models.DateTimeField(null=True, blank=True)
    recoveries = models.PositiveIntegerField(
        default=0, help_text="Recoveries since the last pass that ended well."
    )
    total_recoveries = models.PositiveIntegerField(default=0)
    last_recovery_at = models.DateTimeField(null=True, blank=True)
    last_recovery = models.TextField(blank=True)
    flow_run_generation = models.PositiveSmallIntegerField(
        default=1, help_text="Bumped when recovery has to start a new flow run (its key must be new)."
    )
    cancel_carried_out_at = models.DateTimeField(
        null=True, blank=True, help_text="When Slurm confirmed every job of a cancelled request over."
    )
    work_cleaned_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the sweep removed the work directories of its runs whose results are in the store.",
    )
    # The capacity queue (workflows.orchestration.capacity): what the last pass could not submit for want of a
    # slot, and the slots the lease holder granted it since.
    capacity_wanted = models.PositiveIntegerField(
        default=0, help_text="Steps the last pass could not submit for want of cluster capacity."
    )
    capacity_granted = models.PositiveIntegerField(
        default=0, help_text="Slots granted to this request and not yet taken by a pass."
    )
    capacity_granted_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When it was last granted slots (a grant lapses if not taken in time).",
    )
    capacity_served_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When it last got slots, granted or taken: the queue serves the longest-unserved first.",
    )
    capacity_waiting_since = models.DateTimeField(null=True, blank=True)
    progress_artifact = models.CharField(
        max_length=36, blank=True, help_text="The Prefect progress artifact every pass updates in place."
    )

    class Meta:
        verbose_name_plural = "request progress"

    def __str__(self) -> str:
        return f"Progress of request {self.request_id}: {self.last_outcome or 'no pass yet'}"
