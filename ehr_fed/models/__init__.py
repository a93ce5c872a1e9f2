"""ehr_fed.models."""
