"""Notifications: written once per event with the event, mailed by the service loop to a real SMTP server on
loopback (aiosmtpd), at least once."""

import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest, Notification
from analyses.services import cancel_assembly_analysis_request, record_request_state
from workflows.models import RequestProgress
from workflows.orchestration.recovery import STUCK_AFTER_RECOVERIES, _record_recovery
from workflows.outbox.notify import send_due_notifications

pytestmark = pytest.mark.django_db
ACTIVE = AssemblyAnalysisRequest.ACTIVE_STATUSES


class Inbox:
    """An SMTP server's handler that keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MailServer:
    """An SMTP server on loopback that can be stopped and started again on its port."""

    def __init__(self, inbox: Inbox, port: int) -> None:
        self.inbox, self.port = inbox, port
        self.controller = Controller(inbox, hostname="127.0.0.1", port=port)
        self.running = False

    def start(self) -> None:
        if self.controller.loop.is_closed():  # a stopped controller's loop is closed: a new one
            self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.controller.stop()
            self.running = False


@pytest.fixture
def inbox(settings) -> Iterator[tuple[Inbox, MailServer]]:
    received = Inbox()
    server = MailServer(received, free_port())
    # pytest-django swaps in the locmem backend: these tests talk SMTP to a real server.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.SITE_URL = "https://emgapi.example.org"
    server.start()
    try:
        yield received, server
    finally:
        server.stop()


@pytest.fixture
def request_of(user) -> AssemblyAnalysisRequest:
    user.email = "alice@example.org"
    user.save()
    return AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=user)


def test_a_request_that_ends_twice_is_told_once(inbox, request_of):
    received, _ = inbox
    # A sweep's race: two writers record the end; the second finds the request final and changes nothing.
    assert record_request_state(
        request_of.pk, status="completed", detail="2 run(s) analysed", from_statuses=ACTIVE
    )
    assert not record_request_state(request_of.pk, status="failed", detail="late", from_statuses=ACTIVE)

    assert send_due_notifications() == 1
    assert send_due_notifications() == 0
    [mail] = received.messages
    assert received.recipients == [["alice@example.org"]]
    assert mail["Subject"] == f"emgapi: request {request_of.pk} for PRJEB00001 completed"
    body = mail.get_payload()
    assert "2 run(s) analysed" in body
    assert f"https://emgapi.example.org/api/analyses/?request={request_of.pk}" in body
    row = Notification.objects.get()
    assert (row.event, row.email, row.attempts) == ("completed", "sent", 1) and row.sent_at


def test_a_mail_server_that_is_down_gets_the_mail_once_it_is_back(inbox, request_of):
    received, server = inbox
    server.stop()
    cancel_assembly_analysis_request(request_of, by=request_of.requester, reason="wrong study")

    assert send_due_notifications() == 0
    row = Notification.objects.get()
    assert row.email == "pending" and row.attempts == 1 and "Connection refused" in row.last_error
    assert row.next_attempt_at and row.next_attempt_at > timezone.now()
    assert send_due_notifications() == 0  # not due yet: backoff
    assert received.messages == []

    server.start()
    Notification.objects.update(next_attempt_at=timezone.now())  # the backoff has passed
    assert send_due_notifications() == 1
    [mail] = received.messages
    assert mail["Subject"].endswith("for PRJEB00001 was cancelled") and "wrong study" in mail.get_payload()


def test_a_requester_without_an_email_address_is_skipped_and_it_says_so(inbox, user):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=user)
    record_request_state(request.pk, status="failed", detail="Study unknown to ENA", from_statuses=ACTIVE)
    assert send_due_notifications() == 0
    assert Notification.objects.get().email == "skipped" and inbox[0].messages == []


def test_a_stuck_request_is_told_once_and_a_retried_one_again_when_it_ends(inbox, request_of):
    received, _ = inbox
    RequestProgress.objects.create(request=request_of)
    for _ in range(STUCK_AFTER_RECOVERIES + 2):
        _record_recovery(request_of.pk, "flow run CRASHED")
    record_request_state(request_of.pk, status="failed", detail="1 failed", from_statuses=ACTIVE)
    # The retry starts a new round (recovery.retry_failed_runs): its end is told too.
    record_request_state(request_of.pk, status="pending", metadata={"retries": 1})
    record_request_state(request_of.pk, status="completed", detail="retried", from_statuses=ACTIVE)

    assert send_due_notifications() == 3
    subjects = sorted(mail["Subject"].split(" for PRJEB00001 ")[1] for mail in received.messages)
    assert subjects == ["completed", "failed", "is stuck"]
    stuck = next(mail for mail in received.messages if mail["Subject"].endswith("is stuck"))
    assert "keeps being recovered" in stuck.get_payload()


def test_a_request_awaiting_approval_is_mailed_to_its_requester_and_whoever_may_approve_it(
    inbox, request_of, approver, superuser
):
    received, _ = inbox
    approver.email = "erin@example.org"
    approver.save()  # the superuser (admin@example.org) may approve too
    record_request_state(
        request_of.pk,
        status="awaiting_approval",
        detail="Awaiting approval: 5,000 CPU-hours.",
        from_statuses=ACTIVE,
    )
    assert send_due_notifications() == 1
    [mail] = received.messages
    assert received.recipients == [["alice@example.org", "admin@example.org", "erin@example.org"]]
    assert mail["Subject"] == f"emgapi: request {request_of.pk} for PRJEB00001 awaits approval"
    assert "5,000 CPU-hours" in mail.get_payload()
