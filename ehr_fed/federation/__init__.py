"""ehr_fed.federation."""
