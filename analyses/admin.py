from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from analyses.models import (
    Analysis,
    Assembly,
    AssemblyAnalysisRequest,
    Biome,
    Notification,
    Run,
    Sample,
    Study,
    StudyChange,
    StudyResult,
    WebhookDelivery,
    WebhookEndpoint,
)
from analyses.selectors import active_request, analyses_by_pipeline
from analyses.services import (
    MAX_CANCEL_REASON,
    MAX_REVIEW_REASON,
    REJECTION_NEEDS_REASON,
    NotAwaitingApproval,
    RequestAlreadyFinished,
    cancel_assembly_analysis_request,
    create_assembly_analysis_request,
    may_approve,
    review_assembly_analysis_request,
)

# What ModelAdmin.get_fields returns (django-stubs' _FieldGroups, a list): field names, or names sharing a line.
FieldNames = list[str | list[str] | tuple[str, ...]]


class WrittenByTheService(admin.ModelAdmin):
    """A log the service writes (notifications, deliveries, changes): read here, never added or edited by hand.
    Its rows go with what they belong to (a request or a study deleted)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Biome)
class BiomeAdmin(admin.ModelAdmin):
    list_display = ["lineage", "name"]
    search_fields = ["lineage", "name"]


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = [
        "accession",
        "ena_accession",
        "title",
        "biome",
        "watched_by",
        "last_synced_with_ena",
        "created",
    ]
    list_filter = ["biome", "created", ("watched_by", admin.EmptyFieldListFilter)]
    search_fields = ["accession", "ena_accession", "secondary_ena_accession", "title"]
    readonly_fields = [
        "accession",
        "at_ena",
        "runs",
        "analyses_by_pipeline",
        "requests",
        "last_synced_with_ena",
        "change_log",
        "created",
        "updated",
    ]
    autocomplete_fields = ["biome"]
    raw_id_fields = ["watched_by"]
    list_select_related = ["biome", "watched_by"]
    # The newest change log entries shown on a study's page; the rest are a link away.
    CHANGES_SHOWN = 20
    # What a sync writes from ENA: once synced, ENA is where they change (a hand edit would be overwritten).
    SYNCED_FROM_ENA = ["ena_accession", "secondary_ena_accession", "title", "description"]

    def get_readonly_fields(self, request: HttpRequest, obj: Study | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.last_synced_with_ena is not None:
            readonly += [name for name in self.SYNCED_FROM_ENA if name not in readonly]
        return readonly

    # Runs are a link to their filtered list, not an inline: a study with hundreds of runs would make a form too
    # large to save, and a page too long to read.
    @admin.display(description="runs")
    def runs(self, study: Study) -> SafeString | str:
        if study.pk is None:
            return "—"
        url = reverse("admin:analyses_run_changelist") + f"?study__id__exact={study.pk}"
        return format_html('<a href="{}">{} run(s)</a>', url, study.runs.count())

    @admin.display(description="requests")
    def requests(self, study: Study) -> SafeString | str:
        """The assembly-analysis requests of the study, a link to their list."""
        count = study.assembly_analysis_requests.count() if study.pk is not None else 0
        if not count:
            return "—"
        url = reverse("admin:analyses_assemblyanalysisrequest_changelist") + f"?study__id__exact={study.pk}"
        return format_html('<a href="{}">{} request(s)</a>', url, count)

    @admin.display(description="analyses by pipeline")
    def analyses_by_pipeline(self, study: Study) -> SafeString | str:
        """Each pipeline's analyses of the study, a link to their filtered list."""
        groups = analyses_by_pipeline(study) if study.pk is not None else []
        if not groups:
            return "—"
        url = reverse("admin:analyses_analysis_changelist")
        return format_html_join(
            ", ",
            '<a href="{}?study__id__exact={}&amp;pipeline={}">{}: {}</a>',
            ((url, study.pk, pipeline, pipeline, count) for pipeline, count in groups),
        )

    @admin.display(description="change log")
    def change_log(self, study: Study) -> SafeString | str:
        """What the syncs with ENA found changed, newest first: runs added, withdrawn, checksums, metadata."""
        changes = list(study.changes.all()[: self.CHANGES_SHOWN]) if study.pk is not None else []
        if not changes:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (
                    f"{change.synced_at:%Y-%m-%d %H:%M}",
                    change.get_kind_display(),
                    change.run_accession,
                    change.detail or "",
                )
                for change in changes
            ),
        )
        everything = reverse("admin:analyses_studychange_changelist") + f"?study__id__exact={study.pk}"
        return format_html(
            '<table class="emgapi-changes"><tr><th>synced</th><th>change</th><th>run</th><th>what</th></tr>{}</table>'
            '<a href="{}">the whole change log</a>',
            rows,
            everything,
        )

    @admin.display(description="at ENA")
    def at_ena(self, study: Study) -> SafeString | str:
        if not study.ena_accession:
            return "—"
        return format_html(
            '<a href="https://www.ebi.ac.uk/ena/browser/view/{}" target="_blank" rel="noopener">{}</a>',
            study.ena_accession,
            study.ena_accession,
        )


@admin.register(StudyChange)
class StudyChangeAdmin(WrittenByTheService):
    """Every study's change log (written by syncs with ENA, never edited)."""

    list_display = ["synced_at", "study", "kind", "run_accession", "detail"]
    list_filter = ["kind", "synced_at"]
    search_fields = ["study__accession", "study__ena_accession", "run_accession"]
    list_select_related = ["study"]
    raw_id_fields = ["study"]


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ["accession", "secondary_accession", "study", "created"]
    search_fields = ["accession", "secondary_accession", "study__accession", "study__ena_accession"]
    list_select_related = ["study"]
    raw_id_fields = ["study"]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "accession",
        "study",
        "sample",
        "library_strategy",
        "library_layout",
        "qa_status",
        "withdrawn_at",
        "created",
    ]
    list_filter = [
        "qa_status",
        ("withdrawn_at", admin.EmptyFieldListFilter),
        "library_strategy",
        "library_layout",
        "instrument_platform",
    ]
    search_fields = ["accession", "sample__accession", "study__accession", "study__ena_accession"]
    list_select_related = ["study", "sample"]
    raw_id_fields = ["study", "sample"]


@admin.register(Assembly)
class AssemblyAdmin(admin.ModelAdmin):
    list_display = ["id", "study", "assembler", "status", "directory", "created"]
    list_filter = ["status", "assembler"]
    search_fields = ["study__accession", "study__ena_accession", "runs__accession", "ena_accession"]
    list_select_related = ["study"]
    raw_id_fields = ["study"]
    filter_horizontal = ["runs"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Assembly]:
        # An assembly's name lists its runs: one query for the page, not one per row.
        return super().get_queryset(request).prefetch_related("runs")


@admin.register(Analysis)
class AnalysisAdmin(admin.ModelAdmin):
    list_display = [
        "accession",
        "study",
        "run",
        "pipeline",
        "pipeline_version",
        "assembly",
        "status",
        "created",
    ]
    list_filter = ["status", "pipeline", "pipeline_version"]
    search_fields = ["accession", "study__accession", "study__ena_accession", "run__accession"]
    list_select_related = ["study", "run", "assembly__study"]
    raw_id_fields = ["study", "run", "assembly", "request"]
    readonly_fields = ["accession", "created", "updated"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Analysis]:
        # The assembly column's name lists its runs.
        return super().get_queryset(request).prefetch_related("assembly__runs")


@admin.register(StudyResult)
class StudyResultAdmin(admin.ModelAdmin):
    list_display = ["study", "pipeline", "pipeline_version", "request", "created"]
    list_filter = ["pipeline"]
    search_fields = ["study__accession", "study__ena_accession"]
    list_select_related = ["study", "request"]
    raw_id_fields = ["study", "request"]
    readonly_fields = ["created", "updated"]


@admin.register(AssemblyAnalysisRequest)
class AssemblyAnalysisRequestAdmin(admin.ModelAdmin):
    list_display = ["id", "study_accession", "requester", "status", "flow_run_id", "created", "updated"]
    list_filter = ["status", "created"]
    search_fields = ["study_accession", "requester__username", "study__accession"]
    list_select_related = ["requester", "study"]
    actions = ["cancel_requests", "approve_requests", "reject_requests"]

    def get_fields(self, request: HttpRequest, obj: AssemblyAnalysisRequest | None = None) -> FieldNames:
        if obj is None:
            return ["study_accession"]
        return [
            "study_accession",
            "study",
            "requester",
            "status",
            "status_detail",
            "analyses",
            "flow_run_id",
            "request_metadata",
            "estimated_cpu_hours",
            "reviewed_at",
            "reviewed_by",
            "cancelled_at",
            "cancelled_by",
            "created",
            "updated",
        ]

    def get_readonly_fields(
        self, request: HttpRequest, obj: AssemblyAnalysisRequest | None = None
    ) -> list[str]:
        if obj is None:
            return []
        # A saved request is driven by its workflow; editing it by hand would desynchronise the two.
        return flatten(self.get_fields(request, obj))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # Every field of a saved request is read-only: the page shows it, it does not change it.
        context = {"title": f"View {self.opts.verbose_name}", **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context=context)

    @admin.display(description="analyses")
    def analyses(self, obj: AssemblyAnalysisRequest) -> SafeString | str:
        """What the request made: a link to its analyses (their figures are on each one's page)."""
        count = Analysis.objects.filter(request=obj).count()
        if not count:
            return "—"
        url = reverse("admin:analyses_analysis_changelist") + f"?request__id__exact={obj.pk}"
        return format_html('<a href="{}">{} analysis(es)</a>', url, count)

    @admin.display(description="Flow run")
    def flow_run_id(self, obj: AssemblyAnalysisRequest) -> str:
        return obj.flow_run_id or "—"

    def get_form(
        self,
        request: HttpRequest,
        obj: AssemblyAnalysisRequest | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> type[ModelForm]:
        form_class = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:
            return form_class

        # mypy cannot check a base class known only at run time (the form the admin generates for the model).
        class NewRequestForm(form_class):  # type: ignore[valid-type, misc]
            def clean(self):
                cleaned = super().clean()
                # The database's constraint is the rule; this says it in the form instead of failing the save.
                existing = active_request(cleaned.get("study_accession", ""), request.user)
                if existing is not None:
                    raise ValidationError(
                        f"Request {existing.pk} for this study is already {existing.status}: cancel it, or wait "
                        "for it to finish, before asking again."
                    )
                return cleaned

        return NewRequestForm

    def save_model(self, request: HttpRequest, obj: AssemblyAnalysisRequest, form, change: bool) -> None:
        if change:  # every field of a saved request is read-only: nothing to write
            return
        # Through the service, as the API creates one: the same rules, the same transaction, the same trigger.
        created = create_assembly_analysis_request(
            study_accession=obj.study_accession, requester=request.user
        )
        obj.pk = created.pk
        obj.refresh_from_db()

    @admin.action(description="Cancel selected requests…", permissions=["change"])
    def cancel_requests(
        self, request: HttpRequest, queryset: QuerySet[AssemblyAnalysisRequest]
    ) -> TemplateResponse | None:
        """Asks first, with a reason to give (a page, as Django's own delete action does); then cancels."""
        reason = request.POST.get("reason", "").strip()
        error = ""
        if len(reason) > MAX_CANCEL_REASON:
            error = f"The reason has {len(reason)} characters; at most {MAX_CANCEL_REASON} are kept."
        if request.POST.get("confirmed") != "yes" or error:
            return self._confirmation(
                request,
                queryset,
                verb="Cancel",
                action="cancel_requests",
                intro="Cancelling stops each request's flow run and its Slurm jobs; their work so far is kept, and "
                "the request cannot be resumed (a new request starts again, reusing nothing). The reason is shown "
                "on the request and in the API.",
                reason=reason,
                error=error,
                max_reason=MAX_CANCEL_REASON,
            )
        cancelled = 0
        for obj in queryset:
            try:
                cancel_assembly_analysis_request(
                    obj, by=request.user, reason=reason or f"Cancelled from the admin by {request.user}."
                )
                cancelled += 1
            except RequestAlreadyFinished as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if cancelled:
            self.message_user(request, f"Cancelled {cancelled} request(s).", messages.SUCCESS)
        return None

    def _confirmation(
        self,
        request: HttpRequest,
        queryset: QuerySet[AssemblyAnalysisRequest],
        *,
        verb: str,
        action: str,
        intro: str,
        reason: str,
        error: str,
        max_reason: int,
        reason_required: bool = False,
    ) -> TemplateResponse:
        """The page that asks first (as Django's own delete action does), with a reason to give."""
        context = {
            **self.admin_site.each_context(request),
            "title": f"{verb} these requests?",
            "verb": verb,
            "action": action,
            "intro": intro,
            "reason_required": reason_required,
            "opts": self.model._meta,
            "targets": list(queryset),
            "from_change_page": request.POST.get("_from_change_page", ""),
            "max_reason": max_reason,
            "reason": reason,
            "error": error,
        }
        return TemplateResponse(
            request, "admin/analyses/assemblyanalysisrequest/action_confirmation.html", context
        )

    def has_approve_permission(self, request: HttpRequest) -> bool:
        """The API's approve and reject ask the same (analyses.services.may_approve)."""
        return may_approve(request.user)

    @admin.action(description="Approve selected requests…", permissions=["approve"])
    def approve_requests(
        self, request: HttpRequest, queryset: QuerySet[AssemblyAnalysisRequest]
    ) -> TemplateResponse | None:
        return self._review(request, queryset, approve=True)

    @admin.action(description="Reject selected requests…", permissions=["approve"])
    def reject_requests(
        self, request: HttpRequest, queryset: QuerySet[AssemblyAnalysisRequest]
    ) -> TemplateResponse | None:
        return self._review(request, queryset, approve=False)

    def _review(
        self, request: HttpRequest, queryset: QuerySet[AssemblyAnalysisRequest], *, approve: bool
    ) -> TemplateResponse | None:
        """Asks first, showing each request's estimate and why it waits, with a reason to give (needed to reject)."""
        reason = request.POST.get("reason", "").strip()
        error = ""
        if len(reason) > MAX_REVIEW_REASON:
            error = f"The reason has {len(reason)} characters; at most {MAX_REVIEW_REASON} are kept."
        elif not approve and request.POST.get("confirmed") == "yes" and not reason:
            error = REJECTION_NEEDS_REASON
        if request.POST.get("confirmed") != "yes" or error:
            return self._confirmation(
                request,
                queryset,
                verb="Approve" if approve else "Reject",
                action="approve_requests" if approve else "reject_requests",
                intro="Approving lets each request submit its jobs at once; its requester is told."
                if approve
                else "Rejecting ends each request: no job of it runs. Its requester is told, with the reason.",
                reason=reason,
                error=error,
                max_reason=MAX_REVIEW_REASON,
                reason_required=not approve,
            )
        done = 0
        for obj in queryset:
            try:
                review_assembly_analysis_request(obj, approve=approve, by=request.user, reason=reason)
                done += 1
            except NotAwaitingApproval as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if done:
            verdict = "Approved" if approve else "Rejected"
            self.message_user(request, f"{verdict} {done} request(s).", messages.SUCCESS)
        return None


@admin.register(Notification)
class NotificationAdmin(WrittenByTheService):
    """What each requester was told, and whether the mail went out (sent by the service loop, never edited)."""

    list_display = ["id", "request", "event", "round", "email", "attempts", "sent_at", "created"]
    list_filter = ["event", "email"]
    search_fields = ["request__study_accession", "request__requester__username"]
    list_select_related = ["request"]
    raw_id_fields = ["request"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Users' webhooks: an operator may stop one (active) or read its deliveries; its secret is never shown.
    Users register theirs through the API (/api/webhooks/), which checks the URL."""

    list_display = ["id", "owner", "url", "events", "active", "disabled_reason", "created"]
    list_filter = ["active"]
    search_fields = ["url", "owner__username"]
    list_select_related = ["owner"]
    fields = ["owner", "url", "events", "active", "disabled_reason", "deliveries", "created", "updated"]
    readonly_fields = ["owner", "url", "events", "disabled_reason", "deliveries", "created", "updated"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Deliveries")
    def deliveries(self, obj: WebhookEndpoint) -> SafeString:
        url = reverse("admin:analyses_webhookdelivery_changelist") + f"?endpoint__id__exact={obj.pk}"
        return format_html('<a href="{}">{} deliveries</a>', url, obj.deliveries.count())


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(WrittenByTheService):
    """The delivery log: each notification to each endpoint, its attempts and the last answer (sent by the service
    loop, never edited)."""

    list_display = [
        "delivery_id",
        "endpoint",
        "event",
        "request",
        "status",
        "attempts",
        "response_status",
        "last_error",
        "delivered_at",
        "created",
    ]
    list_filter = ["status", "notification__event"]
    search_fields = ["=delivery_id", "endpoint__url", "notification__request__study_accession"]
    list_select_related = ["endpoint__owner", "notification"]
    raw_id_fields = ["endpoint", "notification"]

    @admin.display(description="Event", ordering="notification__event")
    def event(self, obj: WebhookDelivery) -> str:
        return obj.notification.event

    @admin.display(description="Request", ordering="notification__request")
    def request(self, obj: WebhookDelivery) -> SafeString:
        url = reverse("admin:analyses_assemblyanalysisrequest_change", args=[obj.notification.request_id])
        return format_html('<a href="{}">{}</a>', url, obj.notification.request_id)
