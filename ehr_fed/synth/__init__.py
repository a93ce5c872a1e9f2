"""ehr_fed.synth."""
