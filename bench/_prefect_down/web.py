"""The web side of bench/prefect_down.py: `manage.py runserver` as a real HTTP server with the stack's
environment, a user with a DRF token, and POSTs of new requests from client threads (latency taken client
side)."""

from __future__ import annotations

import queue
import sys
import threading
import time
from pathlib import Path

from bench._prefect_down.record import Post
from bench._report import say
from bench._services import Service, free_port, poll_until, tail

# The web server: DEBUG off as in production, plain HTTP on the loopback.
# The bench POSTs hundreds of requests for one study as one user: each is forced, and the creation throttle is
# lifted (it is measured separately, not here).
WEB_SETTINGS = {
    "DEBUG": "0",
    "ALLOWED_HOSTS": "127.0.0.1",
    "SECURE_SSL_REDIRECT": "0",
    "API_REQUEST_CREATE_THROTTLE": "100000/hour",
}
ENDPOINT = "/api/assembly-analysis-requests/"


class Web:
    """The web server of one benchmark run, and its client: every POST asks for a request for `study`."""

    def __init__(self, study: str, concurrency: int) -> None:
        self.study = study
        self.concurrency = concurrency
        self.port = 0
        self.url = ""
        self.token = ""

    def launch(self, env: dict[str, str], log: Path) -> Service:
        """runserver on a free loopback port (threaded, no reloader) with `env`; returns at once."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        return Service(
            "runserver",
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"],
            env,
            log,
        )

    def ready(self, service: Service) -> None:
        """A user 'bench' who may add requests, with a DRF token; then until runserver answers."""
        import httpx
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Permission
        from rest_framework.authtoken.models import Token

        user = get_user_model().objects.create_user(username="bench", email="bench@example.org")
        user.user_permissions.add(Permission.objects.get(codename="add_assemblyanalysisrequest"))
        self.token = Token.objects.create(user=user).key

        def answers() -> bool:
            if not service.running():
                raise SystemExit(f"runserver exited:\n{tail(service.log)}")
            try:
                return httpx.get(f"{self.url}{ENDPOINT}", timeout=2).status_code in (200, 401, 403)
            except httpx.HTTPError:
                return False

        start = time.monotonic()
        if not poll_until(answers, 60, "runserver", 0.2):
            raise SystemExit(f"runserver did not answer:\n{tail(service.log)}")
        say(
            f"runserver (pid {service.pid}, threaded, {', '.join(f'{k}={v}' for k, v in WEB_SETTINGS.items())}) "
            f"answering at {self.url} after {time.monotonic() - start:.1f} s; user 'bench' with a DRF token"
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def body(self) -> dict[str, object]:
        """A new request for the study, forced (the same study, again and again)."""
        return {"study_accession": self.study, "force": True}

    def post_many(self, n: int) -> list[Post]:
        import httpx

        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(n):
            todo.put(index)
        done: list[Post] = []
        lock = threading.Lock()

        def worker() -> None:
            with httpx.Client(base_url=self.url, headers=self.headers(), timeout=60) as client:
                while True:
                    try:
                        todo.get_nowait()
                    except queue.Empty:
                        return
                    start = time.monotonic()
                    request_id = None
                    try:
                        response = client.post(ENDPOINT, json=self.body())
                        status = str(response.status_code)
                        if response.status_code == 201:
                            request_id = response.json()["id"]
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    post = Post(start, 1000 * (time.monotonic() - start), status, request_id)
                    with lock:
                        done.append(post)

        threads = [threading.Thread(target=worker) for _ in range(self.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sorted(done, key=lambda p: p.started)
