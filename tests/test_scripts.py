"""The dev scripts' promises that a user relies on: one `make run` per clone, and faults that keep off a live stack."""

import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from tests import faults

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_make_run_exits_at_once_and_changes_nothing():
    lock_path = ROOT / "var" / "run.lock"
    lock_path.parent.mkdir(exist_ok=True)
    port_file = ROOT / "var" / "ena_stub.port"
    port_before = port_file.read_bytes() if port_file.exists() else None
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder = str(os.getpid())
            lock.truncate(0)
            lock.write(holder)
            lock.flush()
        except BlockingIOError:  # a real `make run` of this clone is up: it is the first one
            holder = lock_path.read_text().strip()
        try:
            second = subprocess.run(
                ["bash", "scripts/run_stack.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60
            )
        finally:
            if holder == str(os.getpid()):
                lock.truncate(0)
    assert second.returncode == 1
    assert f"already running (pid {holder})" in second.stderr
    assert "emgapi is up" not in second.stdout
    assert (port_file.read_bytes() if port_file.exists() else None) == port_before


def test_a_fault_test_skips_while_a_stack_holds_the_services(tmp_path, monkeypatch):
    monkeypatch.setattr(faults, "SERVICES_LOCK", tmp_path / "services.lock")
    with open(tmp_path / "services.lock", "a+") as stack:
        fcntl.flock(stack, fcntl.LOCK_SH)  # what scripts/run_stack.sh holds while its stack is up
        with pytest.raises(pytest.skip.Exception, match="make run"), faults.shared_services_to_ourselves():
            pytest.fail("entered while the services were held")
    with faults.shared_services_to_ourselves():
        # Held exclusively now: a `make run` starting meanwhile waits (flock -s blocks) until the test is done.
        probe = subprocess.run(["flock", "-s", "-n", str(tmp_path / "services.lock"), "true"])
        assert probe.returncode == 1
