"""Connections of our own to Django's PostgreSQL database, outside Django's connection handling.

A session advisory lock and a LISTEN both belong to one server session: they need a connection that Django will
not close, reuse or wrap in a transaction behind our back.
"""

import psycopg
from django.db import connection


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def own_connection(*, connect_timeout: int = 10) -> psycopg.Connection:
    """A new autocommit connection with the parameters of Django's default database."""
    params = connection.get_connection_params()
    for django_only in ("cursor_factory", "context", "prepare_threshold", "server_side_binding"):
        params.pop(django_only, None)
    return psycopg.connect(**params, autocommit=True, connect_timeout=connect_timeout)
