"""Accession formats: the one place that knows them. Models, serializers and admin forms all use these."""

import re

from django.core.validators import RegexValidator

ENA_STUDY_PATTERN = r"^(?:PRJ(?:EB|NA|DB)\d{4,}|[EDS]RP\d{6,})$"
ENA_SAMPLE_PATTERN = r"^(?:SAM(?:EA|N|D)\d{5,}|[EDS]RS\d{6,})$"
ENA_RUN_PATTERN = r"^[EDS]RR\d{6,}$"
ENA_ANALYSIS_PATTERN = r"^[EDS]RZ\d{6,}$"
MGYS_PATTERN = r"^MGYS\d{8}$"
MGYA_PATTERN = r"^MGYA\d{8}$"

validate_ena_study_accession = RegexValidator(
    ENA_STUDY_PATTERN,
    "Enter an ENA study accession: a project (PRJEB…, PRJNA…, PRJDB…) or a study (ERP…, SRP…, DRP…).",
    code="invalid_accession",
)
validate_ena_sample_accession = RegexValidator(
    ENA_SAMPLE_PATTERN,
    "Enter an ENA/BioSamples sample accession (SAMEA…, SAMN…, SAMD…, ERS…, SRS…, DRS…).",
    code="invalid_accession",
)
validate_ena_run_accession = RegexValidator(
    ENA_RUN_PATTERN, "Enter an ENA run accession (ERR…, SRR…, DRR…).", code="invalid_accession"
)
validate_ena_analysis_accession = RegexValidator(
    ENA_ANALYSIS_PATTERN, "Enter an ENA analysis accession (ERZ…, SRZ…, DRZ…).", code="invalid_accession"
)
validate_mgys_accession = RegexValidator(MGYS_PATTERN, "Enter an MGnify study accession (MGYS + 8 digits).")
validate_mgya_accession = RegexValidator(
    MGYA_PATTERN, "Enter an MGnify analysis accession (MGYA + 8 digits)."
)


def is_ena_study_accession(value: str) -> bool:
    return re.fullmatch(ENA_STUDY_PATTERN, value) is not None


def format_accession(prefix: str, number: int) -> str:
    return f"{prefix}{number:08d}"
