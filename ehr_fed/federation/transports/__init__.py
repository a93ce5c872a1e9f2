"""ehr_fed.federation.transports."""
