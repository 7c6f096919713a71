"""Webhooks: registered through the API, written with the event, POSTed by the service loop to a real HTTP receiver
on loopback, signed, at least once; refused where they may not go."""

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from analyses import webhooks
from analyses.models import AssemblyAnalysisRequest, Notification, WebhookDelivery, WebhookEndpoint
from analyses.services import cancel_assembly_analysis_request, record_request_state
from tests.workflows.test_notifications import free_port
from workflows.outbox.webhooks import deliver_due_webhooks

pytestmark = pytest.mark.django_db
ACTIVE = AssemblyAnalysisRequest.ACTIVE_STATUSES


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on loopback that keeps what it is sent and answers per path; stopped and started on its
    port."""

    port: int
    answers: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                code, headers = receiver.answers.get(self.path, (204, {}))
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args) -> None:  # quiet: the test reads `received`
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver(settings) -> Iterator[Receiver]:
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.SITE_URL = "https://emgapi.example.org"
    server = Receiver(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def register(client, url: str, **fields) -> dict:
    answer = client.post("/api/webhooks/", {"url": url, **fields}, format="json")
    assert answer.status_code == 201, answer.json()
    return answer.json()


def verified(secret: str, received: Received) -> dict:
    """The body, once its signature is checked as the README tells a receiver to check it."""
    parts = dict(item.split("=", 1) for item in received.headers[webhooks.SIGNATURE_HEADER].split(","))
    expected = hmac.new(
        secret.encode(), f"{parts['t']}.".encode() + received.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(expected, parts["v1"]), "the signature does not verify"
    assert abs(int(parts["t"]) - timezone.now().timestamp()) < 300
    return json.loads(received.body)


def test_a_request_that_ends_twice_is_delivered_once_signed(receiver, user, user_client):
    endpoint = register(user_client, receiver.url())
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["events"] == sorted(Notification.Event.values)  # all of them, unless it asks for some
    shown = user_client.get(f"/api/webhooks/{endpoint['id']}/").json()
    assert "secret" not in shown and shown["url"] == receiver.url()
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=user)

    # A sweep's race: two writers record the end; the second finds the request final.
    assert record_request_state(
        request.pk, status="completed", detail="2 run(s) analysed", from_statuses=ACTIVE
    )
    assert not record_request_state(request.pk, status="failed", detail="late", from_statuses=ACTIVE)
    assert deliver_due_webhooks() == 1
    assert deliver_due_webhooks() == 0

    [post] = receiver.received
    body = verified(endpoint["secret"], post)
    assert (
        body["id"] == post.headers[webhooks.DELIVERY_HEADER]
        and post.headers[webhooks.EVENT_HEADER] == "completed"
    )
    assert body["event"] == "completed" and body["detail"] == "2 run(s) analysed"
    assert body["request"]["id"] == request.pk
    assert (
        body["request"]["url"] == f"https://emgapi.example.org/api/assembly-analysis-requests/{request.pk}/"
    )
    assert body["request"]["analyses"] == f"https://emgapi.example.org/api/analyses/?request={request.pk}"
    [logged] = user_client.get(endpoint["deliveries"]).json()["results"]
    assert logged["delivery_id"] == body["id"]
    assert (logged["status"], logged["attempts"], logged["response_status"]) == ("delivered", 1, 204)


def test_a_receiver_that_is_down_gets_the_delivery_once_it_is_back(receiver, user, user_client):
    endpoint = register(user_client, receiver.url())
    receiver.stop()
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=user)
    # Through the API: the web request writes the delivery and sends nothing.
    assert (
        user_client.post(
            f"/api/assembly-analysis-requests/{request.pk}/cancel/", {}, format="json"
        ).status_code
        == 200
    )

    assert deliver_due_webhooks() == 0
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 1) and "ConnectError" in delivery.last_error
    assert delivery.next_attempt_at and delivery.next_attempt_at > timezone.now()
    assert deliver_due_webhooks() == 0  # not due yet: backoff

    receiver.start()
    WebhookDelivery.objects.update(next_attempt_at=timezone.now())  # the backoff has passed
    assert deliver_due_webhooks() == 1
    [post] = receiver.received
    body = verified(endpoint["secret"], post)
    assert body["id"] == str(delivery.delivery_id) and body["event"] == "cancelled"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 2, "")


def test_an_answer_5xx_is_tried_again_under_the_same_delivery_id(receiver, user, user_client):
    register(user_client, receiver.url())
    receiver.answers["/hook"] = (503, {})
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=user)
    record_request_state(request.pk, status="failed", detail="ENA has no public study", from_statuses=ACTIVE)
    assert deliver_due_webhooks() == 0
    assert WebhookDelivery.objects.get().last_error == "answered 503"
    del receiver.answers["/hook"]
    WebhookDelivery.objects.update(next_attempt_at=timezone.now())
    assert deliver_due_webhooks() == 1
    first, second = receiver.received
    assert first.headers[webhooks.DELIVERY_HEADER] == second.headers[webhooks.DELIVERY_HEADER]


def test_a_redirect_to_a_private_address_is_refused_and_not_followed(receiver, user, user_client):
    register(user_client, receiver.url())
    receiver.answers["/hook"] = (307, {"Location": "http://169.254.169.254/latest/meta-data/"})
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=user)
    record_request_state(request.pk, status="completed", detail="done", from_statuses=ACTIVE)

    assert deliver_due_webhooks() == 0
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"  # given up at once: trying again would be refused again
    assert delivery.last_error.startswith("redirected to http://169.254.169.254/latest/meta-data/: ")
    assert "link-local" in delivery.last_error
    assert [post.path for post in receiver.received] == ["/hook"]


def test_a_redirect_within_the_allowed_hosts_is_followed_as_the_same_post(receiver, user, user_client):
    endpoint = register(user_client, receiver.url())
    receiver.answers["/hook"] = (302, {"Location": "/moved"})
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=user)
    record_request_state(request.pk, status="completed", detail="done", from_statuses=ACTIVE)
    assert deliver_due_webhooks() == 1
    assert [post.path for post in receiver.received] == ["/hook", "/moved"]
    verified(endpoint["secret"], receiver.received[1])


def test_an_answer_410_disables_the_endpoint_until_its_owner_sets_it_active(receiver, user, user_client):
    endpoint = register(user_client, receiver.url())
    receiver.answers["/hook"] = (410, {})
    first = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=user)
    record_request_state(first.pk, status="completed", detail="done", from_statuses=ACTIVE)
    assert deliver_due_webhooks() == 0
    shown = user_client.get(f"/api/webhooks/{endpoint['id']}/").json()
    assert shown["active"] is False and "410 Gone" in shown["disabled_reason"]
    assert WebhookDelivery.objects.get().status == "failed"

    second = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00002", requester=user)
    record_request_state(second.pk, status="completed", detail="done", from_statuses=ACTIVE)
    assert WebhookDelivery.objects.count() == 1  # a disabled endpoint is sent nothing new

    answer = user_client.patch(f"/api/webhooks/{endpoint['id']}/", {"active": True}, format="json")
    assert answer.status_code == 200 and answer.json()["disabled_reason"] == ""


def test_only_the_requesters_endpoints_for_the_event_are_sent_it(receiver, user, user_client, other_client):
    mine = register(user_client, receiver.url(), events=["failed"])
    register(other_client, receiver.url("/theirs"))
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=user)
    cancel_assembly_analysis_request(request, by=user, reason="not wanted")
    assert WebhookDelivery.objects.count() == 0  # mine asked for "failed" only; theirs is not the requester's
    assert user_client.get(f"/api/webhooks/{mine['id']}/").status_code == 200
    assert other_client.get(f"/api/webhooks/{mine['id']}/").status_code == 404
    assert other_client.delete(f"/api/webhooks/{mine['id']}/").status_code == 404


def test_a_rotated_secret_signs_what_is_sent_after(receiver, user, user_client):
    endpoint = register(user_client, receiver.url())
    rotated = user_client.post(f"/api/webhooks/{endpoint['id']}/rotate-secret/").json()
    assert rotated["secret"] != endpoint["secret"]
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=user)
    record_request_state(request.pk, status="completed", detail="done", from_statuses=ACTIVE)
    assert deliver_due_webhooks() == 1
    verified(rotated["secret"], receiver.received[0])


@pytest.mark.parametrize(
    "url, says",
    [
        ("ftp://example.org/hook", "Only http and https"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.7/hook", "private address"),
        ("http://[::ffff:192.168.1.1]/hook", "private address"),
        ("http://localhost:8080/hook", "localhost resolves to"),  # resolved first, then checked
        ("https://user:password@example.org/hook", "user name or password"),
        ("http://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_a_url_that_may_not_be_sent_to_is_a_400_naming_it(settings, user_client, url, says):
    settings.WEBHOOK_ALLOWED_HOSTS = []
    answer = user_client.post("/api/webhooks/", {"url": url}, format="json")
    assert answer.status_code == 400
    assert says in " ".join(answer.json()["url"]), answer.json()
    assert not WebhookEndpoint.objects.exists()


def test_an_operator_may_allow_a_private_network(settings, user_client):
    settings.WEBHOOK_ALLOWED_HOSTS = ["10.0.0.0/8"]
    assert (
        user_client.post("/api/webhooks/", {"url": "http://10.0.0.7/hook"}, format="json").status_code == 201
    )


def test_unknown_events_and_fields_are_400s_naming_them(settings, user_client):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    url = "http://127.0.0.1:9/hook"
    answer = user_client.post("/api/webhooks/", {"url": url, "events": ["finished"]}, format="json")
    assert answer.status_code == 400 and "events" in answer.json()
    answer = user_client.post("/api/webhooks/", {"url": url, "secret": "mine"}, format="json")
    assert answer.status_code == 400 and "secret" in answer.json()


def test_webhooks_need_a_user(api_client):
    assert api_client.get("/api/webhooks/").status_code in (401, 403)
