"""Mapping configs: study specs and site mappings, and applying a mapping to source records.

>>> from ehr_fed.mapping import load_study, load_mapping
>>> study = load_study("mappings/studies/readmission_30d.yaml")      # doctest: +SKIP
>>> mapping = load_mapping("mappings/sites/synthea_fhir.yaml")      # doctest: +SKIP

Both raise :class:`ConfigError` listing every :class:`Problem` (file, line, code, message, fix).
"""

from ehr_fed.mapping.loader import detect_kind, load_mapping, load_study, model_to_yaml, validate_file
from ehr_fed.mapping.problems import ConfigError, Problem
from ehr_fed.mapping.site import SiteMapping
from ehr_fed.mapping.study import StudySpec

__all__ = [
    "ConfigError",
    "Problem",
    "SiteMapping",
    "StudySpec",
    "detect_kind",
    "load_mapping",
    "load_study",
    "model_to_yaml",
    "validate_file",
]
