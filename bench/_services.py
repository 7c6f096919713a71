"""The processes a benchmark starts and stops: a service in its own process group with its log, gunicorn serving
the web side (bench/api_reads.py, bench/health.py), a free port for either, and waiting until one answers.
Importing this module changes nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from bench._report import say
from bench._setup import ROOT

if TYPE_CHECKING:
    import httpx


def free_port() -> int:
    """A TCP port free on loopback now, for a server the benchmark starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """A process started in its own session (process group), its output in a log file; stopped by its group."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        if not self.running():
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop within {grace:.0f} s of SIGTERM: SIGKILL to its process group")
        # Whatever else of the group is left (flow processes, workers).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def kill(self) -> None:
        """What a crash does: SIGKILL to the whole process group (the process and every child it started)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def poll_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    say(f"  !! gave up after {timeout:.0f} s waiting for {what}")
    return False


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


@contextlib.contextmanager
def gunicorn(env: dict[str, str], timeout: float) -> Iterator[httpx.Client]:
    """gunicorn (emgapi.wsgi, 2 workers) on a free loopback port with `env`, its output on ours; an httpx client of
    it (requests time out after `timeout` s), once /healthz answers. Stopped on the way out."""
    import httpx

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "emgapi.wsgi",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise SystemExit("gunicorn did not answer in 60 s") from None
                    time.sleep(0.2)
            yield client
    finally:
        server.terminate()
        server.wait(timeout=30)
