"""Common user mistakes, per command, through the CLI entry point: one message and an exit code, no traceback.

Each row of :data:`MISTAKES` is (command, argv template, expected exit code, a fragment of the message).
Templates name files of the ``world`` fixture in braces: a small synthetic federation (FHIR sources),
its harmonized feature tables, a federation YAML over those tables, a trained model and key files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ehr_fed.cli.main import main

PROJECT = Path(__file__).resolve().parents[2]
STUDY = PROJECT / "mappings" / "studies" / "readmission_30d.yaml"
FEATURES = ["age", "los_days", "charlson", "lace"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    from ehr_fed.cohort import harmonize
    from ehr_fed.federation import Federation
    from ehr_fed.mapping import load_study
    from ehr_fed.models import FederatedLogisticRegression
    from ehr_fed.synth import generate_federation

    root = tmp_path_factory.mktemp("world")
    synth = root / "synth"
    generate_federation(synth, n_sites=3, n_patients=300, seed=3, format="fhir")
    tables = {s: harmonize("fhir", synth / s / "fhir", synth / s / "mapping_fhir.yaml", STUDY).table
              for s in ("site_a", "site_b", "site_c")}
    for sid, t in tables.items():
        t.to_parquet(root / f"{sid}.parquet", index=False)
    privacy = {"min_cell_count": 5, "min_sites": 3, "max_params_fraction": 0.5}
    fed = {"study": str(STUDY), "sites": [{"id": s, "table": f"{s}.parquet"} for s in tables],
           "transport": {"kind": "in_process"}, "privacy": privacy}
    (root / "federation.yaml").write_text(yaml.safe_dump(fed))
    two = dict(fed, sites=fed["sites"][:2])
    (root / "two_sites.yaml").write_text(yaml.safe_dump(two))
    missing = dict(fed, sites=[*fed["sites"][:2], {"id": "site_x", "source": "fhir", "input": "nowhere/fhir",
                                                   "mapping": str(synth / "site_a" / "mapping_fhir.yaml")}])
    (root / "missing_site.yaml").write_text(yaml.safe_dump(missing))
    strict = dict(fed, privacy={**privacy, "max_params_fraction": 0.01})
    (root / "strict.yaml").write_text(yaml.safe_dump(strict))
    with Federation.in_process(tables, policy=privacy, encrypted=False, study=load_study(STUDY)) as f:
        FederatedLogisticRegression(encrypted=False, features=FEATURES).fit(f).save(root / "model.json")
    doc = json.loads((root / "model.json").read_text())
    doc["state"]["beta_standardized"][1] += 0.5  # a hand-edited coefficient
    (root / "edited.json").write_text(json.dumps(doc))
    old = json.loads((root / "model.json").read_text())
    del old["checksum"]  # as model files were written before they carried a checksum
    (root / "unsigned.json").write_text(json.dumps(old))
    (root / "keys").mkdir()
    assert main(["keys", "ceremony", "--sites", "site_a,site_b,site_c", "--out", str(root / "keys"),
                 "--bits", "1024", "--allow-insecure"]) == 0
    (root / "afile").write_text("not a folder\n")
    (root / "notjson.json").write_text("hello\n")
    return {"root": str(root), "synth": str(synth), "study": str(STUDY), "fed": str(root / "federation.yaml"),
            "two": str(root / "two_sites.yaml"), "missing_site": str(root / "missing_site.yaml"),
            "strict": str(root / "strict.yaml"), "model": str(root / "model.json"),
            "edited": str(root / "edited.json"), "unsigned": str(root / "unsigned.json"), "keys": str(root / "keys"), "afile": str(root / "afile"),
            "notjson": str(root / "notjson.json"),
            "map_a": str(synth / "site_a" / "mapping_fhir.yaml"), "map_b": str(synth / "site_b" / "mapping_fhir.yaml"),
            "fhir_a": str(synth / "site_a" / "fhir")}


HARMONIZE = "harmonize --source fhir --input {fhir_a} --study {study}"
MISTAKES = [
    # harmonize
    ("harmonize", HARMONIZE + " --mapping {map_b} --out {root}/o.parquet", 1, "matched 0 index event(s)"),
    ("harmonize", HARMONIZE + " --mapping {map_a} --out {root}/o.parquet --min-index-events 100000", 1,
     "fewer than the required 100000"),
    ("harmonize", HARMONIZE + " --mapping {map_a} --out {afile}/o.parquet", 2, "is a file, not a folder"),
    ("harmonize", HARMONIZE + " --mapping {map_a} --out {root}/o.txt", 2, "must end in .parquet or .csv"),
    ("harmonize", HARMONIZE + " --mapping {root}/nope.yaml --out {root}/o.parquet", 1, "nope.yaml"),
    ("harmonize", "harmonize --source fhir --input {root}/nowhere --mapping {map_a} --study {study} "
                  "--out {root}/o.parquet", 1, "nowhere"),
    ("harmonize", "harmonize --source omop --input {fhir_a} --mapping {map_a} --study {study} "
                  "--out {root}/o.parquet", 1, "is for a fhir source, not omop"),
    # mapping
    ("mapping validate", "mapping validate {root}/nope.yaml", 1, "nope.yaml"),
    ("mapping profile", "mapping profile --source fhir --input {root}/nowhere", 1, "nowhere"),
    ("mapping preview", "mapping preview --source fhir --input {fhir_a} --mapping {map_b} --study {study}", 1,
     "matched 0 index event(s)"),
    ("mapping validate", "mapping validate {fed}", 1,
     "federation.yaml is a federation YAML (it lists 3 site(s)), not a site mapping config. `ehr-fed mapping "
     "validate` takes site mapping configs and study specs"),
    ("mapping schema", "mapping schema --out {afile}/schema.json", 1, "afile is a file; a folder was expected"),
    # synth
    ("synth", "synth --out {synth} --sites 3 --patients 300 --seed 3 --format fhir", 2, "pass --force"),
    ("synth", "synth --out {root}/s0 --sites 0", 2, "must be at least 1"),
    ("synth", "synth --out {afile} --sites 1 --patients 5", 1, "afile is a file; a folder was expected"),
    # keys
    ("keys ceremony", "keys ceremony --sites site_a,site_b,site_c --out {keys} --bits 1024 --allow-insecure", 2,
     "pass --force"),
    ("keys ceremony", "keys ceremony --sites site_a,site_a --out {root}/k2", 2, "distinct site ids"),
    ("keys ceremony", "keys ceremony --sites site_a,site_b --out {root}/k3 --bits 512", 2, "2048"),
    ("keys show", "keys show {root}/nope.json", 2, "nope.json"),
    ("keys show", "keys show {notjson}", 2, "not a key file"),
    # stats
    ("stats", "stats --federation {root}/federaton.yaml --out {root}/t.json --plaintext", 1, "federaton.yaml"),
    ("stats", "stats --federation {missing_site} --out {root}/t.json --plaintext", 1, "nowhere"),
    ("stats", "stats --federation {two} --out {root}/t.json --plaintext", 1, "min_sites=3"),
    ("stats", "stats --federation {fed} --out {root}/t.txt --plaintext", 2, "must end in .json or .html"),
    ("stats", "stats --federation {two} --out {root}/t.json --plaintext", 1,
     "the federation lists 2 site(s) (site_a, site_b), and the sites' privacy policy requires min_sites=3"),
    ("stats", "stats --federation {fed} --out {root}/t.json --plaintext --columns age,los_day", 2,
     "--columns: 'los_day' (did you mean 'los_days'?) not feature(s) of the study"),
    ("stats", "stats --federation {study} --out {root}/t.json --plaintext", 1,
     "readmission_30d.yaml is a study spec (study readmission_30d), not a federation YAML"),
    # train
    ("train", "train logreg --federation {root}/nope.yaml --out {root}/m.json --plaintext", 1, "nope.yaml"),
    ("train", "train logreg --federation {fed} --out {model} --plaintext", 2, "pass --force"),
    ("train", "train logreg --federation {fed} --out {root}/m.json --plaintext --features age,weight", 1,
     "['weight'] are not feature columns"),
    ("train", "train logreg --federation {strict} --out {root}/m.json --plaintext", 1,
     "max_params_fraction=0.01"),
    ("train", "train gbdt --federation {fed} --out {model} --plaintext", 2, "pass --force"),
    ("train", "train gbdt --federation {two} --out {root}/m.json --plaintext", 1, "requires min_sites=3: every "
     "sum over fewer sites is refused"),
    ("train", "train logreg --federation {map_a} --out {root}/m.json --plaintext", 1,
     "mapping_fhir.yaml is a site mapping config (site site_a, fhir source), not a federation YAML"),
    ("train", "train logreg --federation {fed} --out {root}/m.json --plaintext --delta 0.1", 2,
     "--delta and --dp-rounds need --epsilon"),
    # evaluate
    ("evaluate", "evaluate --federation {fed} --model {edited} --out {root}/r.html --plaintext", 1,
     "was modified after it was written"),
    ("evaluate", "evaluate --federation {fed} --model {unsigned} --out {root}/r.html --plaintext", 1,
     "unsigned.json has no checksum: it was written by an ehr-fed from before model files carried one"),
    ("evaluate", "evaluate --federation {map_a} --model {model} --out {root}/r.html --plaintext", 1,
     "is a site mapping config (site site_a, fhir source), not a federation YAML. `ehr-fed evaluate` takes a "
     "federation YAML"),
    ("evaluate", "evaluate --federation {two} --model {model} --out {root}/r.html --plaintext", 1,
     "requires min_sites=3"),
    ("evaluate", "evaluate --federation {fed} --model {model} --out {root}/r.html --plaintext --bins 1", 2,
     "--bins must be at least 2"),
    ("evaluate", "evaluate --federation {fed} --model {model} --out {root}/r.html --plaintext --folds 1", 2,
     "--folds must be at least 2"),
    ("evaluate", "evaluate --federation {fed} --model {model} --out {root}/r.html --plaintext "
                 "--test-fraction 1.5", 2, "--test-fraction must be between 0 and 1"),
    ("evaluate", "evaluate --federation {strict} --model {model} --out {root}/r.html --plaintext "
                 "--test-fraction 0.3", 1, "--test-fraction 0.3 would leave the training part of site site_a"),
    ("evaluate", "evaluate --federation {fed} --model {notjson} --out {root}/r.html --plaintext", 1,
     "is not JSON"),
    # predict
    ("predict", "predict --model {edited} --source fhir --input {fhir_a} --mapping {map_a} "
                "--out {root}/s.parquet", 1, "was modified after it was written"),
    ("predict", "predict --model {unsigned} --source fhir --input {fhir_a} --mapping {map_a} "
                "--out {root}/s.parquet", 1, "has no checksum"),
    ("predict", "predict --model {model} --source fhir --input {fhir_a} --mapping {map_b} "
                "--out {root}/s.parquet", 1, "matched 0 index event(s)"),
    # site
    ("site check", "site check {fed}", 1,
     "federation.yaml is a federation YAML (it lists 3 site(s)), not a site YAML. `ehr-fed site check` takes a "
     "site YAML"),
    ("site check", "site check {synth}/federation.yaml", 1, "a federation YAML goes to `--federation "),
    ("site check", "site check {map_a}", 1,
     "mapping_fhir.yaml is a site mapping config (site site_a, fhir source), not a site YAML"),
    ("site check", "site check {map_a}", 1, "a mapping config goes to `ehr-fed mapping validate "),
    ("site check", "site check {study}", 1, "readmission_30d.yaml is a study spec (study readmission_30d)"),
    ("site check", "site check {model}", 1, "model.json is an ehr-fed model file (a logreg model of study "
     "readmission_30d), not a site YAML"),
    ("site check", "site check {root}", 1, "is a folder, a file was expected"),
    ("site serve", "site serve {map_a} --socket {root}/sock", 1,
     "is a site mapping config (site site_a, fhir source), not a site YAML. `ehr-fed site serve`"),
    ("site check", "site check {root}/nope.yaml", 1, "nope.yaml"),
    ("site audit", "site audit {root}/nope.jsonl", 1, "nope.jsonl"),
    ("site audit", "site audit {model}", 1, "model.json is not an audit log (one JSON object per line"),
    ("site audit", "site audit {notjson}", 1, "notjson.json is not an audit log"),
]


@pytest.mark.parametrize("command, template, code, fragment", MISTAKES,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_a_mistake_gives_one_message_and_an_exit_code(world, capsys, command, template, code, fragment):
    argv = template.format(**world).split()
    rc = main(argv)
    cap = capsys.readouterr()
    err = "\n".join(line for line in cap.err.splitlines() if " INFO " not in line)
    assert rc == code, err
    assert "Traceback" not in cap.err and "Traceback" not in cap.out
    assert fragment in err + cap.out, err
    assert "unexpected" not in err, err  # a user mistake, not a bug
    assert not Path(world["root"], "o.parquet").exists() and not Path(world["root"], "s.parquet").exists()


def test_the_installed_entry_point_prints_no_traceback(world):
    """The console script itself (not only ``main``): a mistake ends with a message and exit code 1."""
    exe = Path(sys.executable).with_name("ehr-fed")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ehr_fed.cli.main"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([*cmd, "site", "audit", f"{world['root']}/nope.jsonl"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error:") and "nope.jsonl" in out.stderr


def test_a_bug_is_one_line_too_and_verbose_shows_the_traceback(world, capsys, monkeypatch):
    import ehr_fed.cli.site as site_cli

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(site_cli, "audit", broken)
    rc = main(["site", "audit", "x"])
    err = capsys.readouterr().err
    assert rc == 70 and "unexpected ZeroDivisionError in 'ehr-fed site'" in err and "Traceback" not in err
    rc = main(["-v", "site", "audit", "x"])
    assert rc == 70 and "Traceback" in capsys.readouterr().err


def test_a_model_file_without_checksum_must_be_retrained(world):
    """A file from before checksums (no ``checksum`` key, or an empty one) is refused with what to do; the
    same content sealed again loads, so it is the missing checksum that is refused, nothing else."""
    import ehr_fed
    from ehr_fed.models import ModelFormatError
    from ehr_fed.models.persistence import seal_model_document

    unsigned = Path(world["unsigned"])
    with pytest.raises(ModelFormatError, match=r"has no checksum: .* \(the file says ehr-fed 0\.1\.0, created "
                                               r".*train the model again with this version \(ehr-fed train logreg "
                                               r"\.\.\. --out .*unsigned\.json --force\)"):
        ehr_fed.load_model(unsigned)
    doc = json.loads(unsigned.read_text())
    empty = unsigned.with_name("empty_checksum.json")
    empty.write_text(json.dumps({**doc, "checksum": ""}))
    with pytest.raises(ModelFormatError, match="has no checksum"):
        ehr_fed.load_model(empty)
    resealed = unsigned.with_name("resealed.json")
    resealed.write_text(json.dumps(seal_model_document(doc)))
    model = ehr_fed.load_model(resealed)
    assert list(model.feature_names_in_) == FEATURES
