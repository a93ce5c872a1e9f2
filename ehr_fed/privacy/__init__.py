"""ehr_fed.privacy."""
