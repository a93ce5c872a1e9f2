"""Errors of the OMOP reader."""

from __future__ import annotations


class OmopSourceError(ValueError):
    """An OMOP source cannot be read: a required table or column is missing, or the path is wrong.

    The message says where (file, database schema or table), what was expected and what to do.
    """
