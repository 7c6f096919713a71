import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Runs after pytest-django's sort (database tests, then transactional ones, then the rest), and keeps it.
    # The marker follows the fixture, so `-m "not prefect_server"` (make test-fast) can never miss a test.
    for item in items:
        if "prefect_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.prefect_server)
    # The end-to-end tests (all transactional) first among the transactional ones: they are the long ones, and
    # started late they would leave one xdist worker finishing alone (scripts/test.sh).
    e2e = [item for item in items if item.get_closest_marker("e2e")]
    if e2e:
        start = items.index(e2e[0])
        items[start:] = e2e + [item for item in items[start:] if not item.get_closest_marker("e2e")]


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """The real Prefect server (scripts/prefect_server.sh up) that a test registers deployments on; its URL."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(
            f"needs a Prefect server at {url} ({exc}): run scripts/prefect_server.sh up, or deselect with "
            '-m "not prefect_server"',
            pytrace=False,
        )
    return url


@pytest.fixture(autouse=True)
def _fresh_throttles():
    # Throttle counts live in the cache, which outlives a test; every test starts with none.
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _plain_http(settings):
    # Production settings redirect to HTTPS; the test client speaks plain HTTP.
    settings.SECURE_SSL_REDIRECT = False


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db):
    """A submitter: may create assembly-analysis requests (the model's add permission)."""
    from django.contrib.auth.models import Permission

    alice = get_user_model().objects.create_user("alice", password="alice-password")
    alice.user_permissions.add(Permission.objects.get(codename="add_assemblyanalysisrequest"))
    return alice


@pytest.fixture
def other_user(db):
    """A submitter too (may create requests), but not the requester of alice's."""
    from django.contrib.auth.models import Permission

    bob = get_user_model().objects.create_user("bob", password="bob-password")
    bob.user_permissions.add(Permission.objects.get(codename="add_assemblyanalysisrequest"))
    return bob


@pytest.fixture
def reader(db):
    """Has a token, but no permission to create requests."""
    return get_user_model().objects.create_user("carol", password="carol-password")


@pytest.fixture
def user_without_permission(reader):
    return reader


@pytest.fixture
def operator(db):
    """Not staff, but holds the change permission: may cancel and retry anyone's request."""
    from django.contrib.auth.models import Permission

    dave = get_user_model().objects.create_user("dave", password="dave-password")
    dave.user_permissions.add(Permission.objects.get(codename="change_assemblyanalysisrequest"))
    return dave


@pytest.fixture
def approver(db):
    """Not staff: holds the approve permission only (approves or rejects costly requests, anyone's)."""
    from django.contrib.auth.models import Permission

    erin = get_user_model().objects.create_user("erin", password="erin-password")
    erin.user_permissions.add(Permission.objects.get(codename="approve_assemblyanalysisrequest"))
    return erin


@pytest.fixture
def approver_client(approver) -> APIClient:
    return token_client(approver)


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user("curator", password="curator-password", is_staff=True)


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("admin", "admin@example.org", "admin-password")


def token_client(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def user_client(user) -> APIClient:
    return token_client(user)


@pytest.fixture
def other_client(other_user) -> APIClient:
    return token_client(other_user)


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    return token_client(staff_user)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The real single-node cluster, brought up (idempotently) by the repository's own script."""
    from tests.slurm_support import slurm

    slurm("up")


SCRIPTS_DIR = Path(__file__).resolve().parents[1] / "scripts"
DEMO_ENA_DIR = Path(__file__).resolve().parents[1] / "demo" / "ena"


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
    # Its sibling modules first, which it imports as `python scripts/ena_stub.py` would find them.
    _load_script("ena_stub_data")
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


@pytest.fixture(autouse=True)
def _services_to_ourselves_when_disruptive(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked `disruptive` stops a Slurm daemon or restarts PostgreSQL: it holds the machine's services
    exclusively, or skips while a `make run` uses them (tests/faults.py). make test runs these tests alone."""
    if request.node.get_closest_marker("disruptive") is None:
        yield
        return
    from tests.faults import shared_services_to_ourselves

    with shared_services_to_ourselves():
        yield
