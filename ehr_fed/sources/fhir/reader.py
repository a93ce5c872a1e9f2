"""``read_fhir``: stream a FHIR source into the record tables.

Resources are read one file at a time (NDJSON line by line, Bundles entry by entry), only
the fields of the record tables are extracted, and rows are appended to DuckDB staging
tables in Arrow batches; checks that need the whole source (a subject Patient that is not
in the source, a medicationReference to a missing Medication) run afterwards as SQL joins
(:mod:`ehr_fed.sources.fhir.finalize`).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections import Counter
from pathlib import Path

import duckdb

from ehr_fed.sources.fhir.dates import BadDate
from ehr_fed.sources.fhir.extract import Context, extractors_for
from ehr_fed.sources.fhir.fields import InvalidResource, ResourceBadDate
from ehr_fed.sources.fhir.files import SourceFile, discover, iter_file
from ehr_fed.sources.fhir.finalize import finalize
from ehr_fed.sources.fhir.options import FhirOptions
from ehr_fed.sources.fhir.staging import StagingWriter, create_staging
from ehr_fed.sources.quarantine import Quarantine
from ehr_fed.sources.records import SourceRecords, create_tables

log = logging.getLogger(__name__)


def read_fhir(
    path: str | Path,
    *,
    options: FhirOptions | dict | None = None,
    known_systems=None,
    strict: bool = False,
    workdir: str | Path | None = None,
    progress: bool | None = None,
) -> SourceRecords:
    """Read FHIR R4 Bundles or bulk NDJSON (plain or gzip; a file or a folder) into records.

    Parameters
    ----------
    path : str or Path
        A ``.json``/``.json.gz`` Bundle (or single resource), a ``.ndjson``/``.ndjson.gz`` file,
        or a folder searched recursively for them.
    options : FhirOptions or dict, optional
        Reader options; ``FhirOptions()`` when omitted.
    known_systems : iterable of str, optional
        Code-system URLs the mapping knows: of a CodeableConcept the first coding in one of
        them is taken, else the first coding.
    strict : bool
        Also validate every resource against the FHIR R4B models of ``fhir.resources``;
        failures are quarantined as ``invalid_resource`` with the validation message.
    workdir : str or Path, optional
        Folder for the DuckDB database file. Without it a large input (over
        ``options.large_input_bytes``) goes to a temporary folder removed on ``close()``,
        a small one stays in memory.
    progress : bool, optional
        Show a progress bar over input bytes on stderr; None: only for large inputs.

    Returns
    -------
    SourceRecords
        The six record tables; ``source_records`` counts resources per resourceType;
        ``quarantine`` holds every rejected record with its reason and ``file:line`` or
        ``file#entry[i]`` location.
    """
    opts = _options(options)
    files = discover(path, opts.exclude_files)
    total = sum(f.size for f in files)
    large = total > opts.large_input_bytes
    con, db_path, tmp = _connect(workdir, large, opts)
    try:
        create_tables(con)
        create_staging(con)
        quarantine = Quarantine()
        counts: Counter[str] = Counter()
        ctx = Context(opts, frozenset(known_systems or ()))
        validator = _strict_validator() if strict else None
        bar = _progress_bar(total, progress, large)
        writer = StagingWriter(con, opts.batch_rows)
        try:
            for src, sf in enumerate(files):
                _read_file(src, sf, writer, ctx, counts, quarantine, validator, bar)
            writer.flush()
        finally:
            if bar is not None:
                bar.close()
        finalize(con, files, quarantine, opts)
        con.execute("RESET preserve_insertion_order")  # the later stages get DuckDB's default
    except BaseException:
        con.close()
        if tmp is not None:
            tmp.cleanup()
        raise
    records = SourceRecords(
        con, kind="fhir", quarantine=quarantine, source_records=dict(sorted(counts.items())),
        database_path=db_path,
    )
    records._tempdir = tmp
    return records


def _options(options) -> FhirOptions:
    if options is None:
        return FhirOptions()
    if isinstance(options, FhirOptions):
        return options
    if isinstance(options, dict):
        return FhirOptions.model_validate(options)
    raise TypeError(f"options must be a FhirOptions or a dict, got {type(options).__name__}")


def _connect(workdir, large: bool, opts: FhirOptions):
    tmp = None
    if workdir is not None:
        folder = Path(workdir)
        folder.mkdir(parents=True, exist_ok=True)
    elif large:
        tmp = tempfile.TemporaryDirectory(prefix="ehr_fed_fhir_")
        folder = Path(tmp.name)
    else:
        return duckdb.connect(":memory:"), None, None
    db_path = folder / "fhir_records.duckdb"
    if db_path.exists():
        db_path.unlink()
    con = duckdb.connect(str(db_path))
    con.execute(f"SET memory_limit = '{opts.memory_limit}'")
    con.execute(f"SET temp_directory = '{folder / 'duckdb_tmp'}'")
    con.execute("SET preserve_insertion_order = false")
    return con, db_path, tmp


def _progress_bar(total: int, progress: bool | None, large: bool):
    if progress is False or (progress is None and not large):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="reading FHIR", file=sys.stderr)


def _read_file(src, sf: SourceFile, writer, ctx, counts, quarantine, validator, bar) -> None:
    extractors = extractors_for(ctx.options)
    append = writer.append
    on_bytes = bar.update if bar is not None else None
    for item in iter_file(sf, on_bytes):
        res = item.resource
        rtype = res.get("resourceType") if type(res) is dict else None
        if type(rtype) is not str or not rtype:
            _reject_untyped(item, quarantine)
            continue
        counts[rtype] += 1
        rid = res.get("id")
        if type(rid) is not str or not rid:
            quarantine.add("invalid_resource", item.location, rtype,
                           f"{rtype} has no id (a string is required)", item.raw_text())
            continue
        if validator is not None:
            problem = validator(res)
            if problem is not None:
                quarantine.add("invalid_resource", item.location, rtype, problem, item.raw_text())
                continue
        extract = extractors.get(rtype)
        if extract is None:
            continue
        try:
            rows = extract(res, item.refs, ctx)
        except InvalidResource as exc:
            quarantine.add("invalid_resource", item.location, rtype, str(exc), item.raw_text())
            continue
        except (ResourceBadDate, BadDate) as exc:
            quarantine.add("bad_date", item.location, rtype, str(exc), item.raw_text())
            continue
        tail = (src, item.pos)
        for table, row in rows:
            append(table, row + tail if table != "_med_codes" else row)


def _reject_untyped(item, quarantine: Quarantine) -> None:
    """Quarantine a line or entry that is not a resource (bad JSON, no resourceType)."""
    res = item.resource
    if res is None:
        reason = "malformed_json" if item.error.startswith("not valid JSON") else "invalid_resource"
        quarantine.add(reason, item.location, "unknown", item.error, item.raw_text())
        return
    what = "an object without resourceType" if isinstance(res, dict) else f"JSON {type(res).__name__}"
    quarantine.add("invalid_resource", item.location, "unknown",
                   f"expected a FHIR resource, got {what}", item.raw_text())


def _strict_validator():
    from ehr_fed.sources.fhir.strict import make_validator

    return make_validator()
