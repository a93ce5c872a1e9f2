"""Errors raised by disclosure control."""

from __future__ import annotations

#: reason codes of refusals, by the policy rule that refused (tests and clients match the code, not the wording)
REASON_CODES = {
    "allowed_tasks": "task_not_allowed",
    "max_params_fraction": "too_many_parameters",
    "min_sites": "too_few_sites",
    "min_cell_count": "small_cell",
    "differencing": "differencing",
    "disclosure": "disclosure",
}


class DisclosureError(Exception):
    """A site refuses to release a statistic because it would break its privacy policy.

    Raised by the site (never by the coordinator) so that a hospital's own policy is what decides.
    The message starts with the reason code in brackets, then says which rule (with the policy's own
    setting) refused and what the analyst can change. It never carries a value computed from the site's
    rows (a count, a sum, a number of rows): a refusal leaves the site, and a refusal that depended on
    such a value and printed it would release it.

    Attributes
    ----------
    code : str
        Reason code (:data:`REASON_CODES`), stable across wording changes.
    rule : str
        The policy field that refused (``min_sites``, ``max_params_fraction`` ...).
    site_id : str or None
    """

    def __init__(self, message: str, *, rule: str = "disclosure", site_id: str | None = None,
                 code: str | None = None):
        self.rule = rule
        self.code = code or REASON_CODES.get(rule, rule)
        self.site_id = site_id
        prefix = f"[{self.code}] "
        super().__init__(message if message.startswith(prefix) else prefix + message)
