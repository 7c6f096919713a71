import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from analyses.accessions import is_ena_study_accession
from analyses.models import Analysis, AssemblyAnalysisRequest, Run, Sample, Study


@pytest.mark.parametrize(
    "value", ["PRJEB12345", "PRJNA123456", "PRJDB1234", "ERP123456", "SRP1234567", "DRP000001"]
)
def test_valid_ena_study_accessions(value):
    assert is_ena_study_accession(value)


@pytest.mark.parametrize(
    "value",
    ["", "PRJEB", "prjeb12345", "PRJXX12345", "ERR123456", "PRJEB12345 ", "PRJEB12;rm -rf /", "MGYS00000001"],
)
def test_invalid_ena_study_accessions(value):
    assert not is_ena_study_accession(value)


@pytest.mark.django_db
def test_study_accessions_are_allocated_in_sequence():
    first = Study.objects.create(ena_accession="PRJEB10001")
    second = Study.objects.create(ena_accession="PRJEB10002")
    assert first.accession == "MGYS00000001"
    assert second.accession == "MGYS00000002"
    first.title = "renamed"
    first.save()
    first.refresh_from_db()
    assert first.accession == "MGYS00000001"


@pytest.mark.django_db
def test_study_rejects_malformed_ena_accession():
    with pytest.raises(ValidationError) as excinfo:
        Study(ena_accession="PRJ12").full_clean()
    assert "ena_accession" in excinfo.value.message_dict


@pytest.mark.django_db
def test_sample_and_run_accessions_are_validated():
    study = Study.objects.create(ena_accession="PRJEB10003")
    with pytest.raises(ValidationError) as excinfo:
        Sample(accession="SAMPLE1", study=study).full_clean()
    assert "accession" in excinfo.value.message_dict
    with pytest.raises(ValidationError) as excinfo:
        Run(accession="XRR000001", study=study).full_clean()
    assert "accession" in excinfo.value.message_dict
    Sample(accession="SAMEA1234567", study=study).full_clean()
    Run(accession="ERR1234567", study=study).full_clean()


@pytest.mark.django_db
def test_analysis_needs_a_run_or_an_assembly():
    study = Study.objects.create(ena_accession="PRJEB10004")
    with pytest.raises(IntegrityError), transaction.atomic():
        Analysis.objects.create(study=study)
    run = Run.objects.create(accession="ERR0000001", study=study)
    analysis = Analysis.objects.create(study=study, run=run)
    assert analysis.accession == "MGYA00000001"


@pytest.mark.django_db
def test_request_flow_run_id_comes_from_metadata():
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB10005")
    assert request.flow_run_id is None
    assert request.status == AssemblyAnalysisRequest.Status.PENDING
    request.request_metadata = {"flow_run_id": "abc"}
    assert request.flow_run_id == "abc"
