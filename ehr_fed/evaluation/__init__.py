"""ehr_fed.evaluation."""
