import os


def ensure_django() -> None:
    """Flow runs start in fresh processes that import the flow module by path: set Django up there too."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emgapi.settings")
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
