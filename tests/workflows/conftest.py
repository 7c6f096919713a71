import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "scripts"
DEMO_ENA_DIR = Path(__file__).resolve().parents[2] / "demo" / "ena"


def _load_script(name: str) -> ModuleType:
    # scripts/ is not a package on the import path; load the files the way `python scripts/x.py` would.
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS_DIR / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def make_demo_reads() -> ModuleType:
    return _load_script("make_demo_reads")


@pytest.fixture(scope="session")
def ena_stub(make_demo_reads: ModuleType) -> ModuleType:
    return _load_script("ena_stub")


@pytest.fixture(scope="session")
def stub_fastq_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stub-fastq")


@pytest.fixture
def demo_stub(ena_stub: ModuleType, stub_fastq_dir: Path) -> Iterator[tuple[object, str]]:
    """The ENA stub serving the bundled demo fixtures; yields (server, portal API base URL)."""
    server, base_url = ena_stub.serve_in_thread(DEMO_ENA_DIR, fastq_dir=stub_fastq_dir)
    try:
        yield server, base_url
    finally:
        server.shutdown()
        server.server_close()
