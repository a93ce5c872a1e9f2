"""ehr_fed.sources."""
