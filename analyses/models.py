import uuid

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models, transaction
from django.db.models import Q
from django.db.models.functions import Upper

from analyses import webhooks
from analyses.accessions import (
    format_accession,
    validate_ena_analysis_accession,
    validate_ena_run_accession,
    validate_ena_sample_accession,
    validate_ena_study_accession,
    validate_mgya_accession,
    validate_mgys_accession,
)


class AccessionCounter(models.Model):
    """Last number handed out per accession prefix; a row lock makes allocation safe under concurrency."""

    prefix = models.CharField(max_length=8, primary_key=True)
    last_number = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.prefix}: {self.last_number}"


def allocate_accession(prefix: str) -> str:
    return allocate_accessions(prefix, 1)[0]


def allocate_accessions(prefix: str, count: int) -> list[str]:
    """`count` new accessions in a row, under one lock of the counter (a plan allocates a study's at once)."""
    with transaction.atomic():
        AccessionCounter.objects.get_or_create(prefix=prefix)
        counter = AccessionCounter.objects.select_for_update().get(prefix=prefix)
        first = counter.last_number + 1
        counter.last_number += count
        counter.save(update_fields=["last_number"])
        return [format_accession(prefix, number) for number in range(first, first + count)]


class TimestampedModel(models.Model):
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Biome(models.Model):
    """A GOLD-style biome lineage such as ``root:Environmental:Aquatic:Marine``."""

    lineage = models.CharField(max_length=255, unique=True)
    name = models.CharField(max_length=255, help_text="Last element of the lineage, for display.")

    class Meta:
        ordering = ["lineage"]

    def __str__(self) -> str:
        return self.lineage

    def save(self, *args, **kwargs) -> None:
        if not self.name:
            self.name = self.lineage.rsplit(":", 1)[-1]
        super().save(*args, **kwargs)


class Study(TimestampedModel):
    accession = models.CharField(
        max_length=12,
        unique=True,
        editable=False,
        validators=[validate_mgys_accession],
        help_text="MGnify accession, allocated by the service.",
    )
    ena_accession = models.CharField(
        "ENA study accession",
        max_length=20,
        unique=True,
        validators=[validate_ena_study_accession],
        help_text="ENA project (PRJEB…, PRJNA…, PRJDB…) or study (ERP…, SRP…, DRP…) accession.",
    )
    secondary_ena_accession = models.CharField(
        max_length=20,
        blank=True,
        validators=[validate_ena_study_accession],
        help_text="The other ENA accession of the same study (ERP… for a PRJEB…), as ENA reports it.",
    )
    title = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    biome = models.ForeignKey(Biome, null=True, blank=True, on_delete=models.PROTECT, related_name="studies")
    last_synced_with_ena = models.DateTimeField(null=True, blank=True)
    watched_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="watched_studies",
        help_text="New runs a sync finds start an incremental request of this user's, of those runs only.",
    )

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "studies"
        indexes = [
            # The API's title search is `icontains`, i.e. UPPER(title) LIKE UPPER('%word%'): a trigram index on
            # exactly that expression answers it without reading every title.
            GinIndex(OpClass(Upper("title"), name="gin_trgm_ops"), name="study_title_trgm"),
            # The ena_accession filter matches either accession of the pair (an OR of two index scans).
            models.Index(fields=["secondary_ena_accession"], name="study_secondary_ena_acc"),
            # The lists' order (newest first, id to break ties): a page is the first rows of this index.
            models.Index(fields=["-created", "-id"], name="study_newest_first"),
        ]

    def __str__(self) -> str:
        return f"{self.accession} ({self.ena_accession})"

    def save(self, *args, **kwargs) -> None:
        if not self.accession:
            self.accession = allocate_accession("MGYS")
        super().save(*args, **kwargs)


class Sample(TimestampedModel):
    accession = models.CharField(max_length=20, unique=True, validators=[validate_ena_sample_accession])
    secondary_accession = models.CharField(max_length=20, blank=True)
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="samples")
    title = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["accession"]

    def __str__(self) -> str:
        return self.accession


class Run(TimestampedModel):
    class LibraryLayout(models.TextChoices):
        SINGLE = "SINGLE"
        PAIRED = "PAIRED"

    class QaStatus(models.TextChoices):
        PENDING = "pending"
        PASSED = "passed"
        FAILED = "failed"

    accession = models.CharField(max_length=20, unique=True, validators=[validate_ena_run_accession])
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="runs")
    sample = models.ForeignKey(Sample, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    instrument_platform = models.CharField(max_length=100, blank=True)
    instrument_model = models.CharField(max_length=100, blank=True)
    library_strategy = models.CharField(max_length=50, blank=True, db_index=True)
    library_source = models.CharField(max_length=50, blank=True)
    library_layout = models.CharField(max_length=10, choices=LibraryLayout.choices, blank=True)
    fastq_urls = models.JSONField(
        default=list, blank=True, help_text="Where the FASTQ files are fetched from."
    )
    fastq_md5 = models.JSONField(
        default=list, blank=True, help_text="MD5 of each FASTQ file, in the same order."
    )
    read_count = models.PositiveBigIntegerField(null=True, blank=True)
    base_count = models.PositiveBigIntegerField(null=True, blank=True)
    qa_status = models.CharField(
        max_length=10, choices=QaStatus.choices, default=QaStatus.PENDING, db_index=True
    )
    qa_reason = models.TextField(blank=True, help_text="Why the run was not usable, when QA failed.")
    withdrawn_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a sync no longer found it in ENA (withdrawn or suppressed): never planned again; its "
        "analyses stay.",
    )

    class Meta:
        ordering = ["accession"]

    def __str__(self) -> str:
        return self.accession


class StudyChange(models.Model):
    """What a sync with ENA found changed in a study since the last one: its change log (nothing is deleted)."""

    class Kind(models.TextChoices):
        RUN_ADDED = "run_added", "Run added"
        RUN_WITHDRAWN = "run_withdrawn", "Run withdrawn or suppressed"
        RUN_RESTORED = "run_restored", "Run listed again"
        CHECKSUMS_CHANGED = "checksums_changed", "Checksums changed"
        METADATA_CHANGED = "metadata_changed", "Metadata changed"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="changes")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    run_accession = models.CharField(max_length=20, blank=True, help_text="Empty: the study's own metadata.")
    detail = models.JSONField(
        default=dict, blank=True, help_text="What changed: each field with its value before and after."
    )
    synced_at = models.DateTimeField(help_text="The sync that found it (its changes share this time).")

    class Meta:
        ordering = ["-synced_at", "-id"]
        indexes = [models.Index(fields=["study", "-synced_at"], name="study_change_newest")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.run_accession}".strip()


class ProcessingStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class Assembly(TimestampedModel):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="assemblies")
    runs = models.ManyToManyField(Run, related_name="assemblies")
    ena_accession = models.CharField(
        max_length=20,
        blank=True,
        validators=[validate_ena_analysis_accession],
        help_text="ENA accession once the assembly is submitted (ERZ…).",
    )
    assembler = models.CharField(max_length=50, default="megahit")
    status = models.CharField(
        max_length=10, choices=ProcessingStatus.choices, default=ProcessingStatus.PENDING, db_index=True
    )
    directory = models.CharField(max_length=500, blank=True)
    request = models.ForeignKey(
        "AssemblyAnalysisRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="assemblies"
    )
    run = models.ForeignKey(
        Run,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The run a request assembled on its own (co-assemblies list their runs in `runs` only).",
    )

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "assemblies"
        constraints = [
            # Ingestion is an upsert on this: a flow pass run twice never makes a second assembly.
            models.UniqueConstraint(
                fields=["request", "run"],
                condition=Q(request__isnull=False, run__isnull=False),
                name="assembly_unique_per_request_run",
            )
        ]

    def __str__(self) -> str:
        runs = ",".join(run.accession for run in self.runs.all()) if self.pk else ""
        return f"Assembly {self.pk} of {runs or self.study.ena_accession}"


class Analysis(TimestampedModel):
    accession = models.CharField(
        max_length=12,
        unique=True,
        editable=False,
        validators=[validate_mgya_accession],
        help_text="MGnify analysis accession, allocated by the service.",
    )
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="analyses")
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="analyses")
    assembly = models.ForeignKey(
        Assembly, null=True, blank=True, on_delete=models.CASCADE, related_name="analyses"
    )
    request = models.ForeignKey(
        "AssemblyAnalysisRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="analyses"
    )
    pipeline = models.CharField(max_length=50, default="assembly", db_index=True)
    pipeline_version = models.CharField(max_length=20, default="1.0")
    status = models.CharField(
        max_length=10, choices=ProcessingStatus.choices, default=ProcessingStatus.PENDING, db_index=True
    )
    results_directory = models.CharField(max_length=500, blank=True)
    summary = models.JSONField(default=dict, blank=True, help_text="Summary figures, e.g. contigs and N50.")
    files = models.JSONField(
        default=list,
        blank=True,
        help_text="The results in the archive's store: path (below results_directory), size and sha256, from the "
        "manifest its datamove wrote.",
    )

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "analyses"
        indexes = [
            # The API lists analyses newest first (id breaks ties), all of them or one study's: a page is the
            # first rows of one of these, never a sort of every analysis.
            models.Index(fields=["-created", "-id"], name="analysis_newest_first"),
            models.Index(fields=["study", "-created", "-id"], name="analysis_study_newest_first"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(run__isnull=False) | Q(assembly__isnull=False),
                name="analysis_of_run_or_assembly",
            ),
            models.UniqueConstraint(
                fields=["request", "run", "pipeline"],
                condition=Q(request__isnull=False, run__isnull=False),
                name="analysis_unique_per_request_run_pipeline",
            ),
        ]

    def __str__(self) -> str:
        return self.accession

    def save(self, *args, **kwargs) -> None:
        if not self.accession:
            self.accession = allocate_accession("MGYA")
        super().save(*args, **kwargs)


class StudyResult(TimestampedModel):
    """What a request's study steps made of all its runs by one pipeline (a merged ASV table, say): files in the
    archive's store, listed from their manifest, and the figures those steps recorded."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="results")
    request = models.ForeignKey(
        "AssemblyAnalysisRequest",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="study_results",
    )
    pipeline = models.CharField(max_length=50)
    pipeline_version = models.CharField(max_length=20)
    results_directory = models.CharField(max_length=500)
    files = models.JSONField(default=list, blank=True, help_text="path, size and sha256 of each file")
    summary = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "pipeline"], condition=Q(request__isnull=False), name="study_result_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.pipeline} of {self.study.accession} (request {self.request_id})"


class RequestStatus(models.TextChoices):
    PENDING = "pending"
    # Its plan costs more than the site lets a request spend unasked (workflows/orchestration/approval.py): no job
    # is submitted until a holder of the approve permission approves it (then running) or rejects it.
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


# The one definition of which statuses are over and which are not; every filter and check derives from it.
TERMINAL_REQUEST_STATUSES = frozenset(
    {RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED, RequestStatus.REJECTED}
)
ACTIVE_REQUEST_STATUSES = tuple(status for status in RequestStatus if status not in TERMINAL_REQUEST_STATUSES)


class AssemblyAnalysisRequest(TimestampedModel):
    Status = RequestStatus
    TERMINAL_STATUSES = TERMINAL_REQUEST_STATUSES
    ACTIVE_STATUSES = ACTIVE_REQUEST_STATUSES

    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assembly_analysis_requests",
    )
    study_accession = models.CharField(
        "ENA study accession",
        max_length=20,
        db_index=True,
        validators=[validate_ena_study_accession],
        help_text="ENA project (PRJEB…, PRJNA…, PRJDB…) or study (ERP…, SRP…, DRP…) accession to assemble and analyse.",
    )
    study = models.ForeignKey(
        Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="assembly_analysis_requests"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    status_detail = models.TextField(
        blank=True,
        help_text="What its last change of status said: why it failed or was cancelled, or what came of it.",
    )
    request_metadata = models.JSONField(default=dict, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    forced = models.BooleanField(
        default=False,
        help_text="Asked for while another request of the same requester for the study was active.",
    )
    estimated_cpu_hours = models.FloatField(
        null=True,
        blank=True,
        help_text="Its frozen plan's cost: each step's CPUs times time limit, summed (an upper bound).",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True, help_text="When its approval was decided.")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who approved or rejected it.",
    )

    class Meta:
        ordering = ["-created"]
        permissions = [
            ("approve_assemblyanalysisrequest", "Can approve or reject costly assembly-analysis requests")
        ]
        indexes = [
            models.Index(fields=["requester", "status"]),
            # The API's list: a requester's requests newest first (staff: everyone's, the created index).
            models.Index(fields=["requester", "-created", "-id"], name="request_requester_newest"),
        ]
        constraints = [
            # Three POSTs for one study would start three multi-day assemblies. The database says no, so two
            # concurrent POSTs cannot both pass a check. A partial index sees only the row, not the POST that
            # made it, so `force` has to be a column to be in the condition: forced rows are outside the rule.
            models.UniqueConstraint(
                fields=["study_accession", "requester"],
                condition=models.Q(
                    status__in=[str(status) for status in ACTIVE_REQUEST_STATUSES], forced=False
                ),
                name="one_active_request_per_study_and_requester",
            )
        ]

    def __str__(self) -> str:
        return f"Request {self.pk} for {self.study_accession}"

    @property
    def flow_run_id(self) -> str | None:
        return (self.request_metadata or {}).get("flow_run_id")

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES

    @property
    def retries(self) -> int:
        """How often its failed runs were retried (`retry_failed_runs` counts them in its metadata)."""
        return int((self.request_metadata or {}).get("retries", 0))


class IdempotencyKey(models.Model):
    """An `Idempotency-Key` header a requester sent with a request's creation, and what it created.

    The same key with the same body answers with that request again (a client retrying after a lost response
    creates nothing); with another body it is refused. Written in the transaction that creates the request.
    """

    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_keys"
    )
    key = models.CharField(max_length=255)
    body_hash = models.CharField(max_length=64, help_text="SHA-256 of the request's validated body.")
    request = models.ForeignKey(AssemblyAnalysisRequest, on_delete=models.CASCADE, related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["requester", "key"], name="one_idempotency_key_per_requester")
        ]

    def __str__(self) -> str:
        return f"{self.key} → request {self.request_id}"


class Notification(models.Model):
    """What a request's requester is told, once: written in the transaction that records the event (a request that
    ends twice, in a sweep's race, writes one), and sent by the service loop, never in the web request."""

    class Event(models.TextChoices):
        # A request's terminal statuses (RequestStatus), stuck (recovered 3 times in a row), and its approval.
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"
        REJECTED = "rejected"
        STUCK = "stuck"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        APPROVED = "approved"

    class Delivery(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        SKIPPED = "skipped", "Skipped (the requester has no email address)"

    request = models.ForeignKey(
        AssemblyAnalysisRequest, on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.CharField(max_length=20, choices=Event.choices)
    round = models.PositiveSmallIntegerField(
        default=0, help_text="The request's retries before the event: a retried request is told again."
    )
    detail = models.TextField(blank=True, help_text="What it says: the request's status detail at the event.")
    email = models.CharField(max_length=10, choices=Delivery.choices, default=Delivery.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(fields=["request", "event", "round"], name="one_notification_per_event")
        ]
        indexes = [models.Index(fields=["email", "next_attempt_at"], name="notification_due_idx")]

    def __str__(self) -> str:
        return f"Request {self.request_id} {self.event} ({self.email})"


class WebhookEndpoint(models.Model):
    """Where a program is told of its own requests' events: an HTTP POST, signed with the endpoint's secret.

    The secret is shown once, when the endpoint is registered (or its secret rotated); it is kept to sign with.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000, help_text="Checked when registered and before each delivery.")
    events = models.JSONField(
        default=list, help_text="The notification events sent here (Notification.Event)."
    )
    secret = models.CharField(max_length=100, default=webhooks.new_secret, editable=False)
    active = models.BooleanField(default=True)
    disabled_reason = models.CharField(
        max_length=500,
        blank=True,
        help_text="Why it stopped (an answer 410 Gone): set active again to resume.",
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"Webhook {self.pk} of {self.owner} → {self.url}"


class WebhookDelivery(models.Model):
    """One notification to one endpoint: sent by the service loop at least once, under one delivery id."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed", "Failed (given up)"

    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="The last answer's.")
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "notification"], name="one_delivery_per_endpoint")
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due_idx")]

    def __str__(self) -> str:
        return f"Delivery {self.delivery_id} ({self.status})"
