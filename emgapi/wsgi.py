import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emgapi.settings")
application = get_wsgi_application()

# Load every view (and with them DRF, drf-spectacular and Prefect) now, then move what is loaded out of the
# collector's reach: a full collection otherwise walks those ~200,000 long-lived objects on every request that
# triggers one, about 200 ms each time — the p99 of the API's lists in bench/api_reads.py.
get_resolver().url_patterns  # noqa: B018
gc.freeze()
