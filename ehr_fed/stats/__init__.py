"""Federated descriptive statistics."""
