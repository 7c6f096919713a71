"""What the assembly pipeline records beyond its analysis's summary: the assembly itself, which the archive lists."""

from typing import Any

from django.db import transaction


def record_assembly(*, request: Any, run: Any, analysis: Any, layout: Any) -> None:
    """The run's `Assembly` (an upsert per request and run), linked from its analysis. Called in the ingest's
    transaction by workflows/pipelines/analysis/pipeline.py."""
    from analyses.models import Assembly, ProcessingStatus

    with transaction.atomic():
        assembly, _ = Assembly.objects.update_or_create(
            request=request,
            run=run,
            defaults={
                "study": run.study,
                # Where the contigs are in the archive's store (the layout is that of the moved results).
                "directory": str(layout.one_file("contigs_fa").parent),
                "status": ProcessingStatus.COMPLETED,
            },
        )
        assembly.runs.add(run)
        if analysis.assembly_id != assembly.pk:
            analysis.assembly = assembly
            analysis.save(update_fields=["assembly", "updated"])
