"""ehr_fed.crypto."""
