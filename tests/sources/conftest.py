"""Fixtures of the source tests: a real PostgreSQL server loaded with an OMOP CDM.

``postgres_url`` starts a throw-away PostgreSQL server (``initdb`` + ``pg_ctl`` in a temporary
directory, on a free port of 127.0.0.1, trust authentication), loads
``../shared/data/omop/synthea27nj_v54`` into schema ``cdm`` and stops the server at the end of
the session, whatever happens. PostgreSQL refuses to run as root, so under root the server runs
as the ``postgres`` user (created when missing). Set ``EHR_FED_POSTGRES_URL`` to use an existing
server instead (its database must be empty of a ``cdm`` schema, which the fixture creates).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import duckdb
import pytest

#: the CDM tables the OMOP reader reads (plus visit_detail, which it must ignore)
PG_TABLES = (
    "person", "death", "visit_occurrence", "visit_detail", "condition_occurrence", "measurement",
    "drug_exposure", "procedure_occurrence", "concept", "concept_ancestor",
)
PG_SCHEMA = "cdm"
_PG_TYPES = {
    "BIGINT": "bigint", "INTEGER": "bigint", "DOUBLE": "double precision", "DATE": "date",
    "TIMESTAMP": "timestamp", "BOOLEAN": "boolean", "TIME": "time",
}


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name) else [])
    if not found:
        pytest.fail(
            f"PostgreSQL server binary {name!r} not found (looked in /usr/lib/postgresql/*/bin and PATH). "
            "Install the server (`apt-get install -y postgresql`, done by `make test`) or set "
            "EHR_FED_POSTGRES_URL to an existing server."
        )
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> tuple[list[str], int | None, int | None]:
    """Command prefix, uid and gid to run the server unprivileged."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", "postgres"], check=True)
        pw = pwd.getpwnam("postgres")
    return ["runuser", "-u", "postgres", "--"], pw.pw_uid, pw.pw_gid


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")


def load_omop_into_postgres(url: str, folder: Path, schema: str, tables=PG_TABLES) -> None:
    """Create ``schema`` and load the CSV(.gz) tables of ``folder`` with DuckDB's column types."""
    import psycopg

    files = {p.name.lower().split(".")[0]: p for p in folder.iterdir() if ".csv" in p.name.lower()}
    duck = duckdb.connect()
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(f'CREATE SCHEMA "{schema}"')
        for table in tables:
            path = files[table]
            rel = f"read_csv('{path}', header = true)"
            cols = duck.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()
            ddl = ", ".join(f'"{c[0].lower()}" {_PG_TYPES.get(c[1], "text")}' for c in cols)
            pg.execute(f'CREATE TABLE "{schema}"."{table}" ({ddl})')
            with tempfile.NamedTemporaryFile(suffix=".csv") as tmp:
                duck.execute(f"COPY (SELECT * FROM {rel}) TO '{tmp.name}' (HEADER false)")
                with pg.cursor().copy(f'COPY "{schema}"."{table}" FROM STDIN WITH (FORMAT csv)') as copy:
                    with open(tmp.name, "rb") as fh:
                        while block := fh.read(1 << 20):
                            copy.write(block)
    duck.close()


@pytest.fixture(scope="session")
def postgres_server():
    """``postgresql://`` URL of a running server with an empty database (started here, stopped at the end)."""
    existing = os.environ.get("EHR_FED_POSTGRES_URL")
    if existing:
        yield existing
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    prefix, uid, gid = _server_user()
    root = Path(tempfile.mkdtemp(prefix="ehr-fed-pg-"))
    data, log = root / "data", root / "server.log"
    if uid is not None:
        os.chown(root, uid, gid)
    port = _free_port()
    started = False
    try:
        _run(prefix + [initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
             "initdb")
        opts = f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off -c full_page_writes=off"
        started = True
        _run(prefix + [pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"],
             f"pg_ctl start (log: {log})")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server, shared_data) -> str:
    """URL of the test server with ``synthea27nj_v54`` loaded into schema ``cdm`` (``?schema=cdm``)."""
    load_omop_into_postgres(postgres_server, shared_data / "omop" / "synthea27nj_v54", PG_SCHEMA)
    return f"{postgres_server}?schema={PG_SCHEMA}"


@pytest.fixture(scope="session")
def omop_data(shared_data) -> Path:
    """``../shared/data/omop``."""
    return shared_data / "omop"
