"""FHIR R4 source adapter: Bundles and bulk NDJSON (plain or gzip) into the record tables."""

from ehr_fed.sources.fhir.options import FhirOptions
from ehr_fed.sources.fhir.reader import read_fhir

__all__ = ["FhirOptions", "read_fhir"]
