"""Django looks for an app's admin here; the workflow layer's admin lives with the operator's views."""

from workflows.operations import admin  # noqa: F401  (registers the model admins)
