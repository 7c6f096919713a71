"""/healthz is cheap liveness; /readyz runs the deep checks, cached, with error texts for staff only."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from emgapi import health

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    health._cache.clear()
    yield
    health._cache.clear()


def test_healthz_is_the_process_and_its_database_only(client, monkeypatch):
    def must_not_run() -> dict:
        raise AssertionError("liveness ran a deep check")

    for name in set(health.CHECKS) - {"database"}:
        monkeypatch.setitem(health.CHECKS, name, must_not_run)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": {"ok": True, "vendor": "postgresql"}}}


def test_healthz_is_503_when_the_database_fails(client, monkeypatch):
    monkeypatch.setitem(health.CHECKS, "database", lambda: {"ok": False, "error": "connection refused"})
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert "error" not in response.json()["checks"]["database"]  # anonymous: no internals


def test_readyz_runs_every_check_and_caches_them(client, user, monkeypatch, settings):
    settings.HEALTH_CACHE_SECONDS = 60
    calls = []

    def slurm() -> dict:
        calls.append(1)
        return {"ok": False, "optional": True, "error": "slurmctld does not answer"}

    monkeypatch.setitem(health.CHECKS, "slurm", slurm)
    monkeypatch.setitem(health.CHECKS, "prefect", lambda: {"ok": True, "optional": True})
    client.force_login(user)
    first = client.get("/readyz")
    second = client.get("/readyz")
    assert first.status_code == second.status_code == 200  # an optional check reports, never fails readiness
    assert {"database", "prefect", "slurm", "dispatcher", "poller", "recovery"} <= set(first.json()["checks"])
    assert len(calls) == 1
    assert first.json()["checks"]["slurm"] == {"ok": False, "optional": True}


def test_readyz_shows_error_texts_to_staff(client, monkeypatch, staff_user):
    monkeypatch.setitem(
        health.CHECKS, "slurm", lambda: {"ok": False, "optional": True, "error": "slurmctld does not answer"}
    )
    monkeypatch.setitem(health.CHECKS, "prefect", lambda: {"ok": True, "optional": True})
    client.force_login(staff_user)
    assert client.get("/readyz").json()["checks"]["slurm"]["error"] == "slurmctld does not answer"


def test_readyz_tells_an_anonymous_caller_the_status_only(client, monkeypatch):
    monkeypatch.setitem(health.CHECKS, "slurm", lambda: {"ok": False, "error": "slurmctld does not answer"})
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json() == {"status": "unhealthy"}


def test_an_expired_check_is_rerun_by_one_caller_while_the_others_read_the_last_result(settings):
    settings.HEALTH_CACHE_SECONDS = 0  # every result has expired at once
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_slurm() -> dict:
        calls.append(1)
        if len(calls) > 1:  # the refresh: it takes as long as the controller does
            started.set()
            assert release.wait(30)
        return {"ok": True, "run": len(calls)}

    assert health._cached("slurm", slow_slurm) == {"ok": True, "run": 1}
    with ThreadPoolExecutor(1) as pool:
        refresh = pool.submit(health._cached, "slurm", slow_slurm)
        assert started.wait(30)
        # Ten callers during the refresh: none reruns the check, none waits for it.
        assert [health._cached("slurm", slow_slurm) for _ in range(10)] == [{"ok": True, "run": 1}] * 10
        release.set()
        assert refresh.result(timeout=30) == {"ok": True, "run": 2}
    assert len(calls) == 2
