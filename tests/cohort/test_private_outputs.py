"""Patient-level outputs are written 0600 and atomically; harmonization caches are keyed on the code."""

from __future__ import annotations

import stat
import sys

import pytest

from ehr_fed.cohort import pipeline
from ehr_fed.cohort.pipeline import PRIVATE_MODE, check_index_events, write_private


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_private_gives_owner_only_files_and_keeps_the_old_one_on_failure(tmp_path):
    path = tmp_path / "sub" / "table.csv"
    write_private(path, lambda tmp: tmp.write_text("a,b\n1,2\n"))
    assert path.read_text() == "a,b\n1,2\n" and mode(path) == PRIVATE_MODE == 0o600

    def fails(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_private(path, fails)
    assert path.read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.csv"]  # no temporary file left


def test_too_few_index_events_names_the_site_the_count_and_the_fix():
    summary = {"site_id": "site_b", "study_id": "readmission_30d", "index_events": 0,
               "source_records": {"Patient": 40, "Encounter": 300}}
    with pytest.raises(pipeline.TooFewIndexEventsError,
                       match=r"mapping of site 'site_b' matched 0 index event\(s\) of study 'readmission_30d' "
                             r"in 340 source records, fewer than the required 1\. Check that the mapping"):
        check_index_events(summary, 1)
    check_index_events(dict(summary, index_events=5), 5)
    with pytest.raises(pipeline.TooFewIndexEventsError, match="fewer than the required 6"):
        check_index_events(dict(summary, index_events=5), 6)


def test_the_code_digest_changes_with_the_code_and_the_version(tmp_path, monkeypatch):
    pkg = tmp_path / "fake_harmonizer"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "reader.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(pipeline, "HARMONIZATION_PACKAGES", ("fake_harmonizer",))
    digest = pipeline.harmonization_code_digest.__wrapped__
    before = digest()
    (pkg / "reader.py").write_text("X = 2\n")
    after = digest()
    import ehr_fed

    monkeypatch.setattr(ehr_fed, "__version__", "99.0")
    upgraded = digest()
    assert len({before, after, upgraded}) == 3
    sys.modules.pop("fake_harmonizer", None)


def test_the_cache_key_includes_the_code_digest(tmp_path, monkeypatch):
    from ehr_fed.federation.config import cache_key

    src, mapping = tmp_path / "src.ndjson", tmp_path / "m.yaml"
    src.write_text("{}\n")
    mapping.write_text("site_id: a\n")
    monkeypatch.setattr(pipeline, "harmonization_code_digest", lambda: "old code")
    old = cache_key("fhir", src, mapping, None)
    assert cache_key("fhir", src, mapping, None) == old
    monkeypatch.setattr(pipeline, "harmonization_code_digest", lambda: "new code")
    assert cache_key("fhir", src, mapping, None) != old


def test_the_real_digest_covers_the_harmonization_packages():
    digest = pipeline.harmonization_code_digest()
    assert len(digest) == 64 and digest == pipeline.harmonization_code_digest()
    assert pipeline.HARMONIZATION_PACKAGES == ("ehr_fed.sources", "ehr_fed.mapping", "ehr_fed.cohort")
