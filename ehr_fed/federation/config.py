"""Federation and site configuration files; cached harmonization of each site's feature table.

Federation YAML (written by ``ehr-fed synth``; relative paths are relative to the file)::

    study: ../../mappings/studies/readmission_30d.yaml
    sites:
      - {id: site_a, source: fhir, input: site_a/fhir, mapping: site_a/mapping_fhir.yaml,
         omop_input: site_a/omop.duckdb, omop_mapping: site_a/mapping_omop.yaml}
      - {id: site_b, table: site_b/features.parquet}          # an already built feature table
    transport: {kind: in_process, workers: threads}           # or {kind: flower, ...}
    privacy: {min_cell_count: 10, min_sites: 3, max_params_fraction: 0.1}
    keys: {n_length: 2048}        # + dir: keys/ to keep the sites' keys between runs (sealed key files)

Site YAML (:meth:`SiteNode.from_config`, e.g. from a Flower ClientApp's ``node_config``)::

    site_id: site_a
    study: ../mappings/studies/readmission_30d.yaml
    source: fhir                      # with input + mapping; or `table: features.parquet`
    input: fhir/
    mapping: mapping_fhir.yaml
    policy: {min_cell_count: 10}      # or a path to a policy YAML
    keys: keys/site_a.site.json       # from the key ceremony (0600)
    audit_log: audit/site_a.jsonl
    cache_dir: .ehr_fed_cache

Feature tables are cached as Parquet in ``cache_dir`` keyed by a hash of the source files (path, size,
mtime), the mapping file, the study file and the salt setting; a changed input rebuilds the table.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ehr_fed.privacy import PrivacyPolicy

log = logging.getLogger(__name__)


class FederationConfigError(ValueError):
    """A federation or site configuration file is invalid."""


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FederationConfigError(f"configuration file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise FederationConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise FederationConfigError(f"{path}: expected a mapping at the top level")
    return data


def _resolve(base: Path, value: str | Path | None) -> Path | None:
    if value is None:
        return None
    s = str(value)
    if "://" in s:
        return Path(s)
    p = Path(os.path.expanduser(s))
    return p if p.is_absolute() else (base / p)


def _fingerprint_path(p: Path, h) -> None:
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    elif p.exists():
        st = p.stat()
        h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        if st.st_size < 1 << 20:
            h.update(p.read_bytes())
    else:
        h.update(str(p).encode())


def cache_key(kind: str, input: Path, mapping: Path, study: Path | None) -> str:
    h = hashlib.sha256(f"{kind}\n".encode())
    for p in (input, mapping, study):
        if p is not None:
            _fingerprint_path(p, h)
    # tables keyed with another person-key secret are not reused (the secret itself is not stored)
    h.update(("salt:" + hashlib.sha256(os.environ.get("EHR_FED_PERSON_SALT", "").encode()).hexdigest()).encode())
    from ehr_fed.cohort.pipeline import harmonization_code_digest

    h.update(f"code:{harmonization_code_digest()}".encode())  # version + code that builds the tables
    return h.hexdigest()[:24]


def build_site_table(site_id: str, kind: str, input: Path, mapping: Path, study: Path | None,
                     cache_dir: Path | None) -> pd.DataFrame:
    """Harmonize one site's source (``ehr_fed.cohort.harmonize``), cached as Parquet in ``cache_dir``."""
    cached = None
    if cache_dir is not None:
        cached = Path(cache_dir) / f"{site_id}-{cache_key(kind, input, mapping, study)}.parquet"
        if cached.exists():
            log.info("site %s: feature table from cache %s", site_id, cached)
            return pd.read_parquet(cached)
    from ehr_fed.cohort import harmonize

    log.info("site %s: harmonizing %s source %s", site_id, kind, input)
    table = harmonize(kind, str(input), str(mapping), str(study) if study else None).table
    if cached is not None:
        if not cached.parent.exists():
            cached.parent.mkdir(parents=True, mode=0o700)
        tmp = cached.with_name(cached.name + ".tmp")
        # patient-level rows: created 0600 before anything is written into the file
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        os.chmod(tmp, 0o600)
        table.to_parquet(tmp, index=False)
        os.replace(tmp, cached)
    return table


def _site_table(entry: dict[str, Any], base: Path, study: Path | None, cache_dir: Path | None,
                source: str | None) -> pd.DataFrame:
    sid = entry.get("id") or entry.get("site_id")
    if "table" in entry:
        p = _resolve(base, entry["table"])
        return pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, parse_dates=["index_time"])
    kind = source or entry.get("source", "fhir")
    if kind == "omop" and "omop_input" in entry:
        inp, mp = entry["omop_input"], entry.get("omop_mapping", entry.get("mapping"))
    else:
        inp, mp = entry.get("input"), entry.get("mapping")
    if inp is None or mp is None:
        raise FederationConfigError(
            f"site {sid!r}: needs `input` and `mapping` (or `table`) for source {kind!r}"
        )
    return build_site_table(sid, kind, _resolve(base, inp), _resolve(base, mp), study, cache_dir)


def _policy(value: Any, base: Path) -> PrivacyPolicy:
    if value is None:
        return PrivacyPolicy()
    if isinstance(value, str):
        return PrivacyPolicy.from_yaml(_resolve(base, value))
    return PrivacyPolicy.from_mapping(value)


def _load_study(path: Path | None):
    if path is None:
        return None
    from ehr_fed.mapping import load_study

    return load_study(path)


def federation_from_yaml(path: str | Path, *, study: str | Path | None = None, encrypted: bool = True,
                         key_bits: int | None = None, allow_insecure: bool = False,
                         checkpoint_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                         source: str | None = None, **kwargs: Any):
    """Build a :class:`Federation` from its YAML file (see the module docstring)."""
    from ehr_fed.federation.coordinator import Federation

    path = Path(path)
    cfg = _load_yaml(path)
    base = path.parent
    study_path = Path(study) if study is not None else _resolve(base, cfg.get("study"))
    study_spec = _load_study(study_path)
    policy = _policy(cfg.get("privacy"), base)
    transport = dict(cfg.get("transport") or {"kind": "in_process"})
    kind = transport.pop("kind", "in_process")
    key_bits = key_bits or int((cfg.get("keys") or {}).get("n_length", 2048))
    sites = cfg.get("sites") or []
    if not sites:
        raise FederationConfigError(f"{path}: no sites listed under `sites:`")
    ids = [s.get("id") or s.get("site_id") for s in sites]
    if None in ids or len(set(ids)) != len(ids):
        raise FederationConfigError(f"{path}: every site needs a unique `id`, got {ids}")
    if kind == "flower":
        from ehr_fed.federation.transports import flower

        return flower.federation_from_config(
            cfg, base_dir=base, study=study_spec, policy=policy, encrypted=encrypted,
            checkpoint_dir=checkpoint_dir, **kwargs,
        )
    if kind != "in_process":
        raise FederationConfigError(f"{path}: transport kind {kind!r} is not one of ['in_process', 'flower']")
    cache = Path(cache_dir) if cache_dir is not None else base / ".ehr_fed_cache"
    tables = {sid: _site_table(s, base, study_path, cache, source) for sid, s in zip(ids, sites, strict=False)}
    site_policies = {sid: _policy(s["privacy"], base) for sid, s in zip(ids, sites, strict=False) if "privacy" in s}
    kwargs.setdefault("workers", transport.get("workers", "threads"))
    keys_cfg = cfg.get("keys") or {}
    scheme = str(keys_cfg.get("scheme", "single"))
    if scheme not in ("single", "threshold"):
        raise FederationConfigError(f"{path}: keys.scheme must be 'single' or 'threshold', got {scheme!r}")
    kwargs.setdefault("key_scheme", scheme)
    kwargs.setdefault("threshold", keys_cfg.get("threshold"))
    if "site_keys" not in kwargs:
        kept = _simulated_site_keys(path, _resolve(base, keys_cfg.get("dir")), ids, key_bits=key_bits,
                                    allow_insecure=allow_insecure, encrypted=encrypted, scheme=scheme,
                                    threshold=kwargs["threshold"])
        if kept is not None:
            kwargs["site_keys"] = kept
    return Federation.in_process(
        tables, policy=policy, encrypted=encrypted, key_bits=key_bits, allow_insecure=allow_insecure,
        checkpoint_dir=checkpoint_dir, study=study_spec, site_policies=site_policies or None, **kwargs,
    )


def _simulated_site_keys(path: Path, folder: Path | None, ids: list[str], *, key_bits: int, allow_insecure: bool,
                         encrypted: bool, scheme: str, threshold: Any) -> dict | None:
    """The sites' identity and Paillier keys of an in-process federation whose YAML names ``keys: {dir: ...}``.

    Loaded from ``<dir>/<site>.site.json`` when every site's file is there; otherwise (an empty or new folder)
    one ceremony makes them and each is written there (0600, sealed under ``$EHR_FED_KEY_PASSPHRASE`` like
    every site key file). Later runs then keep the sites' identities, so a model file trained in one run
    carries a transcript the sites of the next run can verify. ``None`` without ``dir``: a new ceremony in
    every run.
    """
    if folder is None:
        return None
    from ehr_fed.federation.keys import KeyCeremonyError, SiteKeys, run_ceremony

    files = {sid: folder / f"{sid}.site.json" for sid in ids}
    present = sorted(sid for sid, f in files.items() if f.exists())
    try:
        if present and len(present) == len(ids):
            keys = {sid: SiteKeys.load(f) for sid, f in files.items()}
            for sid, k in keys.items():
                if k.site_id != sid or k.scheme != scheme or (encrypted and not k.paillier_public):
                    raise FederationConfigError(
                        f"{path}: keys.dir {folder}: {files[sid].name} holds the keys of {k.site_id!r} "
                        f"(scheme {k.scheme!r}{'' if k.paillier_public else ', no Paillier key'}), not of a "
                        f"{scheme!r} federation's site {sid!r}; move the folder away to run a new ceremony")
            return keys
        if present:
            missing = sorted(set(ids) - set(present))
            raise FederationConfigError(
                f"{path}: keys.dir {folder} holds the key files of {present} but not of {missing}: restore them, "
                "or move the folder away to run a new ceremony for every site")
        keys = {sid: SiteKeys.generate(sid) for sid in ids}
        run_ceremony(keys, n_length=key_bits, allow_insecure=allow_insecure, encrypted=encrypted, scheme=scheme,
                     threshold=threshold)
        for sid, k in keys.items():
            k.save(files[sid])
        return keys
    except KeyCeremonyError as exc:
        raise FederationConfigError(f"{path}: keys.dir {folder}: {exc}") from None


def load_site_config(path: str | Path, **overrides: Any):
    """Build a :class:`SiteNode` from a site YAML (see the module docstring)."""
    from ehr_fed.federation.keys import SiteKeys
    from ehr_fed.federation.site import SiteNode

    path = Path(path)
    cfg = {**_load_yaml(path), **overrides}
    base = path.parent
    sid = cfg.get("site_id") or cfg.get("id")
    if not sid:
        raise FederationConfigError(f"{path}: `site_id` is required")
    study_path = _resolve(base, cfg.get("study"))
    spec = _load_study(study_path) if study_path and study_path.exists() else None
    cache = _resolve(base, cfg.get("cache_dir", ".ehr_fed_cache"))
    table = cfg["table_df"] if "table_df" in cfg else _site_table({**cfg, "id": sid}, base, study_path,
                                                                   cache, None)
    keys_path = _resolve(base, cfg.get("keys"))
    keys = SiteKeys.load(keys_path) if keys_path is not None else None
    if keys is not None and keys.site_id != sid:
        raise FederationConfigError(f"{path}: key file {keys_path} belongs to {keys.site_id!r}, not {sid!r}")
    audit = _resolve(base, cfg.get("audit_log"))
    study_id = getattr(spec, "study_id", "") if spec is not None else str(cfg.get("study_id", ""))
    # the site's protocol memory (nonces, opened sums, bound decrypting sites): beside the audit log unless set
    state = _resolve(base, cfg.get("state"))
    if state is None and audit is not None:
        state = Path(audit).with_name(f"{sid}.state.jsonl")
    return SiteNode(sid, table, _policy(cfg.get("policy"), base), keys, study=study_id, audit_log=audit,
                    state=state)
