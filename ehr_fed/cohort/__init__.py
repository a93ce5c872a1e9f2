"""ehr_fed.cohort."""
