"""OmopOptions: defaults read standard OMOP; mistakes are refused with what to do."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ehr_fed.sources.omop import OmopOptions


def test_defaults_are_standard_omop():
    o = OmopOptions()
    assert (o.person_id_field, o.visit_id_field, o.db_schema) == ("person_id", "visit_occurrence_id", None)
    assert o.condition_occurrence.code_field == "concept_id"
    assert o.condition_occurrence.time_fields == ["condition_start_datetime", "condition_start_date"]
    assert o.drug_exposure.end_time_fields == ["drug_exposure_end_datetime", "drug_exposure_end_date"]
    assert o.visit_occurrence.start_time_fields == ["visit_start_datetime", "visit_start_date"]


def test_round_trip_with_schema_alias():
    data = {
        "schema": "cdm",
        "person_id_field": "person_source_value",
        "condition_occurrence": {
            "code_field": "source_value",
            "vocabulary_rules": [{"pattern": "^[A-Z]", "vocabulary": "ICD10CM"},
                                 {"source_concept_id_range": [44819000, 44838000], "vocabulary": "ICD9CM"}],
        },
    }
    o = OmopOptions.model_validate(data)
    assert o.db_schema == "cdm"
    again = OmopOptions.model_validate(o.model_dump(by_alias=True))
    assert again == o
    assert again.condition_occurrence.time_fields == ["condition_start_datetime", "condition_start_date"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"condition_occurrence": {"code_field": "source_value"}}, "needs 'source_vocabulary'"),
        ({"condition_occurrence": {"code_field": "source_value",
                                   "vocabulary_rules": [{"vocabulary": "ICD9CM"}]}}, "needs a 'pattern' or"),
        ({"measurement": {"vocabulary_rules": [{"pattern": "([", "vocabulary": "LOINC"}]}},
         "is not a regular expression"),
        ({"person_id_field": "mrn"}, "person_id_field"),
        ({"schema": "cdm; drop table person"}, "is not a plain identifier"),
        ({"visit_occurrence": {"start_time_fields": ["visit start"]}}, "are not column names"),
        ({"visits": {}}, "Extra inputs are not permitted"),
        ({"memory_limit": "1GB'; SET x"}, "is not a size"),
    ],
)
def test_mistakes_are_refused(data, message):
    with pytest.raises(ValidationError, match=message):
        OmopOptions.model_validate(data)
