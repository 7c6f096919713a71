"""What a request may ask for per step (its `resources`), checked before the request is accepted.

Each step a request names gets its own CPUs, memory and time limit over the pipeline's (spec.yaml, then the site's
PIPELINE_CONFIG). Beyond the cluster's ceilings (SLURM_MAX_MEMORY_MB, SLURM_MAX_TIME_MINUTES) no job could run:
refused here. Beyond the site's caps (REQUEST_RESOURCE_CAPS) it may run once approved: accepted, and held
(workflows/orchestration/approval.py).
"""

from collections.abc import Callable, Collection
from typing import Any

from django.conf import settings

RESOURCE_NAMES = ("cpus", "memory_mb", "time_limit_minutes")
MINIMUM = {"cpus": 1, "memory_mb": 64, "time_limit_minutes": 1}
# Where the step names a request may use come from: the workflow layer registers its pipelines' (the domain does
# not import it). With none registered, names are left to the planning, which fails the request naming them.
STEP_NAMES: list[Callable[[], Collection[str]]] = []


def resources_errors(resources: Any) -> list[str]:
    """Everything wrong with a request's `resources`, each said with the step and resource it is about."""
    if not isinstance(resources, dict):
        return ['Give an object of steps, e.g. {"assembly": {"memory_mb": 4096}}.']
    known = set().union(*(provider() for provider in STEP_NAMES)) if STEP_NAMES else None
    ceilings = {
        "memory_mb": settings.SLURM_MAX_MEMORY_MB,
        "time_limit_minutes": settings.SLURM_MAX_TIME_MINUTES,
    }
    errors = []
    for step, values in resources.items():
        if known is not None and step not in known:
            errors.append(f"{step}: no pipeline has this step; steps are {', '.join(sorted(known))}.")
            continue
        if not isinstance(values, dict) or not values:
            errors.append(f"{step}: give an object of {', '.join(RESOURCE_NAMES)}.")
            continue
        for name, value in values.items():
            if name not in RESOURCE_NAMES:
                errors.append(f"{step}.{name}: unknown; a step's resources are {', '.join(RESOURCE_NAMES)}.")
            elif isinstance(value, bool) or not isinstance(value, int) or value < MINIMUM[name]:
                errors.append(f"{step}.{name}: give an integer of at least {MINIMUM[name]}.")
            elif name in ceilings and value > ceilings[name]:
                errors.append(f"{step}.{name}: {value} is over the cluster's ceiling of {ceilings[name]}.")
    return errors
