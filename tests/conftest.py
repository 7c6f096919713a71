import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def _plain_http(settings):
    # Production settings redirect to HTTPS; the test client speaks plain HTTP.
    settings.SECURE_SSL_REDIRECT = False


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("alice", password="alice-password")


@pytest.fixture
def other_user(db):
    return get_user_model().objects.create_user("bob", password="bob-password")


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
