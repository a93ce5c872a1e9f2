"""ehr_fed.mapping."""
