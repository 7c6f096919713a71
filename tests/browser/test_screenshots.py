"""A failing browser test leaves the page it saw as a PNG in the run's output directory."""

import contextlib
from types import SimpleNamespace
from typing import Any

from tests.browser import conftest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def report_through_the_hook(page, when: str, failed: bool) -> SimpleNamespace:
    """Drive the hook wrapper as pytest does: it receives the report made for the test's phase."""
    # Stand-ins for pytest's item, call and hook result, with just what the hook reads (hence typed Any).
    report = SimpleNamespace(when=when, failed=failed, sections=[])
    item: Any = SimpleNamespace(funcargs={"page": page}, nodeid="tests/browser/test_admin.py::test_x[a b]")
    call: Any = None
    result: Any = SimpleNamespace(get_result=lambda: report)
    hook = conftest.pytest_runtest_makereport(item, call)
    next(hook)
    with contextlib.suppress(StopIteration):  # the wrapper is done once it has the report
        hook.send(result)
    return report


def test_a_failing_browser_test_leaves_its_page_as_a_png_named_after_it(page, tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "RESULTS_DIR", tmp_path / "results")
    page.set_content("<h1>what the test saw</h1>")

    report = report_through_the_hook(page, "call", failed=True)

    path = tmp_path / "results" / "tests_browser_test_admin.py_test_x_a_b_.png"
    assert report.sections == [("screenshot", str(path))]
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_a_passing_browser_test_leaves_nothing(page, tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "RESULTS_DIR", tmp_path / "results")
    assert report_through_the_hook(page, "call", failed=False).sections == []
    assert not (tmp_path / "results").exists()
