"""The workflow layer in the admin: the ledger and the outbox read-only, and a request's work on its own page.

The request's admin is defined by the domain (`analyses.admin`); this module extends it with what only the
workflow layer knows (jobs, trigger, flow run), so the domain never imports the workflow layer.
"""

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import flatten
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from analyses.admin import AssemblyAnalysisRequestAdmin, FieldNames, StudyAdmin, WrittenByTheService
from analyses.models import AssemblyAnalysisRequest, Study
from analyses.pagination import BoundedCountPaginator
from workflows.models import ClusterJob, PollerLease, StepBatch, Trigger
from workflows.operations import steering
from workflows.pipelines.analysis.pipeline import all_step_names
from workflows.selectors import current_plan, latest_trigger


class ReadOnlyAdmin(WrittenByTheService):
    """Written by the service only: an edit by hand would desynchronise it from Slurm or Prefect."""

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class StepFilter(admin.SimpleListFilter):
    title = "step"
    parameter_name = "step"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [(step, step) for step in sorted(all_step_names())]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ClusterJob]) -> QuerySet[ClusterJob]:
        # Job names are `emgapi-<step>-<run>` (workflows/pipelines/engine.py).
        return queryset.filter(name__startswith=f"emgapi-{self.value()}-") if self.value() else queryset


class DispatchStateFilter(admin.SimpleListFilter):
    """The states an operator reads (`steering.trigger_state`): a failing trigger is a pending one that failed."""

    title = "state"
    parameter_name = "dispatch"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("pending", "pending"), ("failing", "failing"), ("dispatched", "dispatched")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Trigger]) -> QuerySet[Trigger]:
        if self.value() == "dispatched":
            return queryset.filter(status=Trigger.Status.DISPATCHED)
        if self.value() == "pending":
            return queryset.filter(status=Trigger.Status.PENDING, attempts=0)
        if self.value() == "failing":
            return queryset.filter(status=Trigger.Status.PENDING, attempts__gt=0)
        return queryset


def _link(obj, label: str | None = None) -> SafeString | str:
    if obj is None:
        return "—"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


def _jobs_table(css_class: str, rows: list[steering.JobRow]) -> SafeString:
    body = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                row.step,
                row.run,
                row.job.attempt,
                _link(row.job, row.job.slurm_job_id or "unsubmitted"),
                row.job.state + (" (stale)" if row.job.state_stale else ""),
                "" if row.job.exit_code is None else row.job.exit_code,
                steering.format_elapsed(row.elapsed),
                format_html("<details><summary>log</summary><pre>{}</pre></details>", row.job.log_tail)
                if row.job.log_tail
                else "",
            )
            for row in rows
        ),
    )
    return format_html(
        '<table class="{}"><tr><th>step</th><th>run</th><th>attempt</th><th>job id</th><th>state</th>'
        "<th>exit code</th><th>elapsed</th><th>last log lines</th></tr>{}</table>",
        css_class,
        body,
    )


@admin.register(ClusterJob)
class ClusterJobAdmin(ReadOnlyAdmin):
    list_display = [
        "step",
        "request_link",
        "attempt",
        "slurm_job_id",
        "state",
        "state_stale",
        "exit_code",
        "submitted_at",
        "started_at",
        "ended_at",
    ]
    list_filter = ["state", StepFilter, "state_stale"]
    search_fields = ["slurm_job_id", "key", "=request__id", "name"]
    list_select_related = ["request"]
    # The ledger grows by four rows a run: no COUNT(*) of all of it on every page. The count stops at
    # API_EXACT_COUNT_LIMIT (an estimate past it, as the API's), the total is not shown, and the order is
    # cluster_job_order_idx's, read backwards (with a request filter, cluster_job_request_order_idx's).
    show_full_result_count = False
    paginator = BoundedCountPaginator
    ordering = ["-created", "-attempt", "-id"]
    fields = [
        "name",
        "request_link",
        "key",
        "attempt",
        "escalation",
        "slurm_job_id",
        "state",
        "slurm_state",
        "reason",
        "exit_code",
        "state_stale",
        "state_checked_at",
        "cancellation",
        "submitted_at",
        "started_at",
        "ended_at",
        "spec_json",
        "log",
        "flow_run_id",
        "claim",
    ]
    readonly_fields = flatten(fields)

    @admin.display(description="step", ordering="name")
    def step(self, job: ClusterJob) -> str:
        return steering.job_step(job)

    @admin.display(description="request", ordering="request")
    def request_link(self, job: ClusterJob) -> SafeString | str:
        return _link(job.request, f"Request {job.request_id}") if job.request_id else "—"

    @admin.display(description="escalation chain")
    def escalation(self, job: ClusterJob) -> SafeString | str:
        previous = job.previous_attempt
        following = ClusterJob.objects.filter(previous_attempt=job).first()
        if previous is None and following is None:
            return "—"
        return format_html(
            "after: {} · before: {}",
            _link(previous, f"attempt {previous.attempt}") if previous else "—",
            _link(following, f"attempt {following.attempt}") if following else "—",
        )

    @admin.display(description="spec")
    def spec_json(self, job: ClusterJob) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(job.spec, indent=2, sort_keys=True))

    @admin.display(description="log tail")
    def log(self, job: ClusterJob) -> SafeString | str:
        return format_html("<pre>{}</pre>", job.log_tail) if job.log_tail else "—"


@admin.register(Trigger)
class TriggerAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "source",
        "deployment_name",
        "dispatch_state",
        "attempts",
        "short_error",
        "next_attempt_at",
        "flow_run_id",
        "created",
    ]
    list_filter = [DispatchStateFilter]
    search_fields = ["source", "flow_run_id", "idempotency_key"]
    readonly_fields = [
        "source",
        "deployment_name",
        "parameters",
        "idempotency_key",
        "status",
        "attempts",
        "last_error",
        "next_attempt_at",
        "flow_run_id",
        "created",
        "dispatched_at",
    ]
    actions = ["dispatch_now"]

    @admin.display(description="state")
    def dispatch_state(self, trigger: Trigger) -> str:
        return steering.trigger_state(trigger)

    @admin.display(description="last error")
    def short_error(self, trigger: Trigger) -> str:
        return trigger.last_error[:120]

    @admin.action(description="Dispatch now (forget the back-off)", permissions=["change"])
    def dispatch_now(self, request: HttpRequest, queryset: QuerySet[Trigger]) -> None:
        due = steering.dispatch_now(queryset)
        self.message_user(
            request,
            f"{due} pending trigger(s) queued for immediate dispatch; the service loops were woken to send them."
            if due
            else "None of the selected triggers is pending: nothing to dispatch.",
            messages.SUCCESS if due else messages.WARNING,
        )

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # The changelist's action needs it; the fields stay read-only.
        return request.user.has_perm("workflows.change_trigger")


@admin.register(PollerLease)
class PollerLeaseAdmin(ReadOnlyAdmin):
    list_display = ["name", "holder", "expires_at", "last_poll_at", "last_success_at", "polls", "last_error"]


@admin.register(StepBatch)
class StepBatchAdmin(ReadOnlyAdmin):
    """The runs of a request that shared one job for a step, and what its status file said of each."""

    list_display = ["id", "request", "step", "label", "statuses_attempt", "created"]
    list_filter = ["step", "pipeline"]
    search_fields = ["key", "label"]
    raw_id_fields = ["request"]
    list_select_related = ["request"]
    fields = [
        "request",
        "pipeline",
        "step",
        "label",
        "members",
        "key",
        "statuses",
        "statuses_attempt",
        "created",
    ]


class SteeringButtons(admin.ModelAdmin):
    """Actions as buttons on an object's page: each posts the changelist's action for this one object (one code
    path, one message), and brings the curator back to the page, where the action's message shows. The buttons
    follow the actions' permissions: an action this user is not offered in the list is not a button either."""

    change_form_template = "admin/steering_change_form.html"

    def page_actions(self, obj: Any) -> list[tuple[str, str]]:
        """(action name, button label) of the actions that would do something to `obj` now."""
        return []

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        obj = self.get_object(request, object_id)
        offered = self.get_actions(request)
        extra_context = {
            **(extra_context or {}),
            "steering_actions": [
                (action, label) for action, label in self.page_actions(obj) if action in offered
            ]
            if obj
            else [],
        }
        return super().change_view(request, object_id, form_url, extra_context)

    # django-stubs 6.1 describes Django 6.0, whose response_action also takes `action_location`; 5.2's does not.
    def response_action(  # type: ignore[override]
        self, request: HttpRequest, queryset: QuerySet
    ) -> HttpResponse | None:
        response = super().response_action(request, queryset)
        back = request.POST.get("_from_change_page", "")
        if back.isdigit() and isinstance(response, HttpResponseRedirect):
            opts = self.model._meta
            return redirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[int(back)]))
        return response


admin.site.unregister(Study)


@admin.register(Study)
class StudyWorkAdmin(SteeringButtons, StudyAdmin):
    """The domain's study admin, with the sync the workflow layer runs ("Sync now" on a study's page)."""

    actions = ["sync_with_ena"]

    def page_actions(self, obj: Study) -> list[tuple[str, str]]:
        return [("sync_with_ena", "Sync now")] if obj.ena_accession else []

    @admin.action(description="Sync selected studies with ENA", permissions=["change"])
    def sync_with_ena(self, request: HttpRequest, queryset: QuerySet[Study]) -> None:
        count = steering.sync_with_ena(queryset)
        self.message_user(
            request, f"{count} study sync(s) queued; each runs as a flow run.", messages.SUCCESS
        )


admin.site.unregister(AssemblyAnalysisRequest)


@admin.register(AssemblyAnalysisRequest)
class AssemblyAnalysisRequestWorkAdmin(SteeringButtons, AssemblyAnalysisRequestAdmin):
    """The domain's request admin, with its flow run, trigger, outcomes and Slurm jobs."""

    actions = [*AssemblyAnalysisRequestAdmin.actions, "retry_failed_runs", "redispatch", "delete_selected"]
    WORK_FIELDS = ["flow_run", "dispatch", "outcomes", "jobs"]

    def page_actions(self, obj: AssemblyAnalysisRequest) -> list[tuple[str, str]]:
        return steering.page_actions(obj, latest_trigger(obj))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        # Every field of a saved request is read-only: a Save button would promise an edit it cannot make.
        no_save = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **no_save})

    def get_fields(self, request: HttpRequest, obj: AssemblyAnalysisRequest | None = None) -> FieldNames:
        fields = super().get_fields(request, obj)
        if obj is None:
            return fields
        return [
            field for field in fields if field not in ("flow_run_id", "request_metadata")
        ] + self.WORK_FIELDS

    @admin.display(description="flow run")
    def flow_run(self, obj: AssemblyAnalysisRequest) -> SafeString | str:
        url = steering.prefect_ui_url(obj.flow_run_id)
        if url is None:
            return obj.flow_run_id or "— (not dispatched yet)"
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">{}</a> (Prefect UI)', url, obj.flow_run_id
        )

    @admin.display(description="dispatch")
    def dispatch(self, obj: AssemblyAnalysisRequest) -> SafeString | str:
        trigger = latest_trigger(obj)
        if trigger is None:
            return "—"
        error = format_html("; last error: {}", trigger.last_error[:300]) if trigger.last_error else ""
        return format_html(
            "{} {}{}", _link(trigger, f"trigger {trigger.pk}"), steering.trigger_state(trigger), error
        )

    @admin.display(description="per-run outcome")
    def outcomes(self, obj: AssemblyAnalysisRequest) -> SafeString | str:
        plan = current_plan(obj)
        outcomes = steering.run_outcomes(obj, plan.rejected if plan else None)
        if not outcomes:
            return "— (no run finished yet)"
        return format_html(
            '<table class="emgapi-run-outcomes"><tr><th>run</th><th>outcome</th><th>route</th>'
            "<th>pipelines</th><th>reason</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (outcome.run, outcome.outcome, outcome.route, outcome.pipelines, outcome.reason)
                    for outcome in outcomes
                ),
            ),
        )

    @admin.display(description="Slurm jobs")
    def jobs(self, obj: AssemblyAnalysisRequest) -> SafeString | str:
        # Counts, the newest failures and the last jobs: a 5,000-run study has 20,000 jobs, which the full,
        # paginated lists (the admin's and the API's) show a page at a time.
        overview = steering.jobs_overview(obj)
        if not overview.total:
            return "— (nothing submitted yet)"
        every = f"{reverse('admin:workflows_clusterjob_changelist')}?request__id__exact={obj.pk}"
        counts = format_html_join(
            " · ",
            '<a href="{}&amp;state__exact={}">{}: {}</a>',
            ((every, state, state, f"{jobs:,}") for state, jobs in overview.counts.items()),
        )
        parts = [
            format_html(
                '<p>{} jobs: {}. Every job, a page at a time: <a href="{}">the jobs list</a> or '
                '<a href="{}">the API</a>.</p>',
                f"{overview.total:,}",
                counts,
                every,
                reverse("assembly-analysis-request-jobs", args=[obj.pk]),
            )
        ]
        if overview.failures:
            parts.append(
                format_html(
                    "<p>Failed attempts: the {} newest of {} failures.</p>{}",
                    len(overview.failures),
                    f"{overview.failed:,}",
                    _jobs_table("emgapi-job-failures", overview.failures),
                )
            )
        if len(overview.last) < overview.total:
            parts.append(
                format_html("<p>The last {} of {} jobs:</p>", len(overview.last), f"{overview.total:,}")
            )
        parts.append(_jobs_table("emgapi-jobs", overview.last))
        return format_html_join("", "{}", ((part,) for part in parts))

    def has_delete_permission(self, request: HttpRequest, obj: AssemblyAnalysisRequest | None = None) -> bool:
        # A running request's flow run and jobs would outlive its row: cancel first, then delete.
        if obj is not None and not obj.is_terminal:
            return False
        return super().has_delete_permission(request, obj)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context=None) -> HttpResponse:
        obj = self.get_object(request, object_id)
        if obj is not None and (refusal := steering.deletion_refused(obj)):
            self.message_user(request, refusal, messages.ERROR)
            return redirect(reverse("admin:analyses_assemblyanalysisrequest_change", args=[obj.pk]))
        return super().delete_view(request, object_id, extra_context)

    @admin.action(description="Delete selected requests (finished ones)", permissions=["delete"])
    def delete_selected(
        self, request: HttpRequest, queryset: QuerySet[AssemblyAnalysisRequest]
    ) -> HttpResponse | None:
        # Replaces Django's bulk delete, whose answer to an unfinished request in the selection is a bare 403.
        refusals = [refusal for obj in queryset if (refusal := steering.deletion_refused(obj))]
        for refusal in refusals:
            self.message_user(request, refusal, messages.ERROR)
        return None if refusals else django_delete_selected(self, request, queryset)

    @admin.action(description="Retry failed runs of selected requests", permissions=["change"])
    def retry_failed_runs(self, request: HttpRequest, queryset: QuerySet[AssemblyAnalysisRequest]) -> None:
        for retried, message in steering.retry(queryset):
            self.message_user(request, message, messages.SUCCESS if retried else messages.WARNING)

    @admin.action(
        description="Re-dispatch the trigger of selected requests (if it never reached Prefect)",
        permissions=["change"],
    )
    def redispatch(self, request: HttpRequest, queryset: QuerySet[AssemblyAnalysisRequest]) -> None:
        for due, message in steering.redispatch(queryset):
            self.message_user(request, message, messages.SUCCESS if due else messages.WARNING)
