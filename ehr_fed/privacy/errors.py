"""Errors raised by disclosure control."""

from __future__ import annotations


class DisclosureError(Exception):
    """A site refuses to release a statistic because it would break its privacy policy.

    Raised by the site (never by the coordinator) so that a hospital's own policy is what decides.
    The message says which rule, the value that broke it and what the analyst can change.
    """

    def __init__(self, message: str, *, rule: str = "disclosure", site_id: str | None = None):
        super().__init__(message)
        self.rule = rule
        self.site_id = site_id
