"""The vocabulary subset a read needs: ``concept`` rows of the ids in use, ``concept_ancestor``.

Only concepts used by the staged clinical tables (their ``*_concept_id``, measurement
``unit_concept_id`` and ``condition_source_concept_id``) are read, and only ``concept_ancestor`` rows whose descendant is one of
them: enough to resolve codes and to match a study's concept ids with their descendants, without
copying a full OHDSI vocabulary (millions of rows).
"""

from __future__ import annotations

from ehr_fed.sources.omop.build import STAGE, Build
from ehr_fed.sources.omop.options import DOMAIN_PREFIX
from ehr_fed.sources.omop.sql import bigint, text

CONCEPT = f"{STAGE}.concept_codes"
USED = f"{STAGE}.used_concepts"


def stage_vocabulary(b: Build, staged: dict[str, str]) -> None:
    """Create ``_omop_stage.concept_codes(id, vocabulary_id, concept_code)`` and ``concept_ancestor``."""
    parts = [
        f"SELECT {bigint(DOMAIN_PREFIX[t] + '_concept_id')} AS id FROM {stg}" for t, stg in staged.items()
    ]
    if "condition_occurrence" in staged:
        parts.append(f"SELECT {bigint('condition_source_concept_id')} AS id FROM {staged['condition_occurrence']}")
    if "measurement" in staged:
        parts.append(f"SELECT {bigint('unit_concept_id')} AS id FROM {staged['measurement']}")
    union = " UNION ".join(parts) if parts else "SELECT CAST(NULL AS BIGINT) AS id"
    b.con.execute(
        f"CREATE TABLE {USED} AS SELECT DISTINCT id FROM ({union}) WHERE id IS NOT NULL AND id <> 0"
    )
    used_query = f"SELECT id FROM {USED}"
    if b.backend.has("concept"):
        b.require("concept", ["concept_id", "vocabulary_id", "concept_code"])
        stg = b.stage(
            "concept", ["concept_id", "vocabulary_id", "concept_code"], id_filter=("concept_id", used_query)
        )
        b.con.execute(
            f"CREATE TABLE {CONCEPT} AS SELECT {bigint('concept_id')} AS id, "
            f"any_value({text('vocabulary_id')}) AS vocabulary_id, any_value({text('concept_code')}) AS concept_code "
            f"FROM {stg} GROUP BY 1"
        )
    else:
        b.con.execute(f"CREATE TABLE {CONCEPT} (id BIGINT, vocabulary_id VARCHAR, concept_code VARCHAR)")
    if b.backend.has("concept_ancestor"):
        b.require("concept_ancestor", ["ancestor_concept_id", "descendant_concept_id"])
        stg = b.stage(
            "concept_ancestor",
            ["ancestor_concept_id", "descendant_concept_id"],
            id_filter=("descendant_concept_id", used_query),
        )
        b.con.execute(
            "CREATE TABLE concept_ancestor AS SELECT DISTINCT "
            f"{bigint('ancestor_concept_id')} AS ancestor_concept_id, "
            f"{bigint('descendant_concept_id')} AS descendant_concept_id FROM {stg} "
            "WHERE ancestor_concept_id IS NOT NULL AND descendant_concept_id IS NOT NULL"
        )
