"""ehr-fed: federated analytics on hospital EHR data."""

__version__ = "0.1.0"
