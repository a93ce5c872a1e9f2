"""The site privacy policy: the disclosure rules a hospital applies to everything that leaves it.

A policy is plain data (YAML), validated when loaded::

    min_cell_count: 10          # any count, histogram bin or category below this is suppressed or merged
    min_sites: 3                # a decrypted aggregate must combine at least this many distinct sites
    max_params_fraction: 0.33   # a model may not have more parameters than this fraction of the site's rows
    allowed_tasks: null         # null = every registered task; else a list of task names or prefixes "stats.*"
    audit_log: audit.jsonl      # where the site appends one JSON line per released payload (optional)
    dp: {epsilon: 4, delta: 1.0e-6}   # optional: differential privacy required, budget per study
    approved_models: []         # model digests ("sha256:...") this site evaluates without a training transcript
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ehr_fed.privacy.dp import DPConfig
from ehr_fed.privacy.errors import DisclosureError


class PolicyError(ValueError):
    """A privacy policy file or mapping is invalid; lists every problem."""


class PrivacyPolicy(BaseModel):
    """Disclosure rules enforced by a site on its own replies.

    Parameters
    ----------
    min_cell_count : int
        Smallest count (of persons / rows) any released cell may hold; cells with
        ``0 < n < min_cell_count`` are suppressed (or merged into a neighbour for histograms).
    min_sites : int
        Smallest number of distinct, signed site contributions a decrypted sum may combine.
    max_params_fraction : float
        For model (``kind="gradient"``) tasks: number of parameters <= this fraction of the site's rows.
        The default, 0.33, is DataSHIELD's ``nfilter.glm``: a site with ``n`` rows answers a model of at
        most ``n / 3`` parameters, so its ``p`` gradient equations leave at least ``2p`` of its ``n`` labels
        undetermined and no row can be solved for from one reply. A logistic regression of the shipped
        readmission study (27 terms) then needs 82 rows per site; 0.1 (the old default) needed 270 and
        refused ordinary small hospitals. Lower it in a site's policy to be stricter.
    allowed_tasks : list of str or None
        Task names (shell patterns such as ``"stats.*"`` allowed) this site will run; ``None`` = all.
    audit_log : str or None
        Path of the site's JSON-lines audit log (relative paths are relative to the policy/site file).
    dp : DPConfig or None
        Differential privacy budget per study (``{epsilon, delta}``, see :mod:`ehr_fed.privacy.dp`): when
        set, the site answers only private releases and refuses one that would exceed the study's budget
        (ledger beside the audit log, :mod:`ehr_fed.privacy.budget`).
    approved_models : list of str
        Externally trained models this site agrees to evaluate, by their model digest (``sha256:<hex>``, see
        :func:`ehr_fed.evaluation.provenance.approved_digest`). Any other model is evaluated only when it
        follows from a training transcript the site verifies (:mod:`ehr_fed.evaluation.provenance`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_cell_count: int = Field(10, ge=1)
    min_sites: int = Field(3, ge=1)
    max_params_fraction: float = Field(0.33, gt=0, le=1)
    allowed_tasks: list[str] | None = None
    audit_log: str | None = None
    dp: DPConfig | None = None
    approved_models: list[str] = Field(default_factory=list)

    @field_validator("approved_models")
    @classmethod
    def _digests(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if not re.fullmatch(r"sha256:[0-9a-f]{64}", str(d))]
        if bad:
            raise ValueError(f"entries must be model digests 'sha256:<64 hex digits>' (as a refusal names them, "
                             f"or ehr_fed.evaluation.provenance.approved_digest(model) gives them), got {bad}")
        return v

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None, *, source: str = "<policy>") -> PrivacyPolicy:
        """Build from a plain mapping (a YAML section); every problem is reported at once."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            problems = [
                f"{source}: {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                for err in exc.errors()
            ]
            raise PolicyError(
                "invalid privacy policy:\n  " + "\n  ".join(problems)
                + "\nfix the listed keys (valid keys: "
                + ", ".join(cls.model_fields) + ")"
            ) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> PrivacyPolicy:
        """Load a policy YAML file (missing keys take the defaults)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise PolicyError(f"privacy policy file {path} does not exist") from None
        if not isinstance(data, dict):
            raise PolicyError(f"{path}: a privacy policy must be a mapping, got {type(data).__name__}")
        if "privacy" in data and isinstance(data["privacy"], dict):
            data = data["privacy"]
        return cls.from_mapping(data, source=str(path))

    # -- checks -------------------------------------------------------------------------------
    def allows_task(self, name: str, mode: str | None = None) -> bool:
        """Whether the task ``name`` may run at this site (in release ``mode``, when given).

        ``allowed_tasks`` entries are task names or shell patterns (``"stats.*"``: every release mode of those
        tasks) or ``"<pattern>:<mode>"`` with mode ``plaintext`` or ``secure_sum`` (``"stats.count:plaintext"``).
        """
        if self.allowed_tasks is None:
            return True
        for pat in self.allowed_tasks:
            task_pat, _, mode_pat = pat.partition(":")
            if fnmatch.fnmatchcase(name, task_pat) and (not mode_pat or mode is None or mode_pat == mode):
                return True
        return False

    def check_task(self, name: str, site_id: str | None = None, mode: str | None = None) -> None:
        """Raise :class:`DisclosureError` when ``name`` (in release ``mode``) is not an allowed task."""
        if not self.allows_task(name, mode):
            what = f"task {name!r}" + (f" as a {mode} release" if mode else "")
            raise DisclosureError(
                f"site {site_id or '?'} does not allow {what} (rule allowed_tasks: "
                f"{self.allowed_tasks}); ask the site to add it to its privacy policy",
                rule="allowed_tasks",
                site_id=site_id,
            )

    def check_params(self, n_params: int, n_rows: int, task: str, site_id: str | None = None) -> None:
        """Raise :class:`DisclosureError` when a model has too many parameters for the site's rows.

        The refusal names the rule and the model's (public) number of parameters, never the site's rows.
        """
        limit = self.max_params_fraction * n_rows
        if n_params > limit:
            raise DisclosureError(
                f"site {site_id or '?'} refuses task {task!r}: {n_params} model parameters exceed "
                f"max_params_fraction={self.max_params_fraction} of the site's rows (rule max_params_fraction); "
                "use fewer features or ask the site to raise max_params_fraction",
                rule="max_params_fraction",
                site_id=site_id,
            )

    def check_min_sites(self, n_sites: int, what: str, site_id: str | None = None) -> None:
        """Raise :class:`DisclosureError` when an aggregate combines fewer than ``min_sites`` sites."""
        if n_sites < self.min_sites:
            raise DisclosureError(
                f"site {site_id or '?'} refuses to decrypt {what}: it combines {n_sites} distinct "
                f"signed site contribution(s), the policy requires min_sites={self.min_sites} (rule min_sites)",
                rule="min_sites",
                site_id=site_id,
            )

    def check_min_count(self, requested: int, what: str, site_id: str | None = None) -> None:
        """Raise :class:`DisclosureError` when a request asks for cells smaller than ``min_cell_count``."""
        if int(requested) < self.min_cell_count:
            raise DisclosureError(
                f"site {site_id or '?'} refuses {what}: the request allows cells of {int(requested)} rows, "
                f"below this site's minimum cell count {self.min_cell_count} (rule min_cell_count); train "
                f"with min_count >= {self.min_cell_count}",
                rule="min_cell_count",
                site_id=site_id,
            )
