"""ehr_fed.stats."""
