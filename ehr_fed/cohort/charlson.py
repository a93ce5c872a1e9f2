"""Charlson comorbidity index: categories, weights and their codes.

ICD-10 codes follow Quan et al. (Med Care 2005;43:1130-9), ICD-9-CM codes the
Deyo adaptation (J Clin Epidemiol 1992;45:613-9), both with the original
Charlson weights (J Chronic Dis 1987;40:373-83). Codes are prefixes, written
without dots. SNOMED CT lists cover the conditions Synthea generates; they are
not a complete SNOMED mapping. OMOP standard concepts are matched through their
SNOMED ``concept_code``.

Hierarchy: complicated diabetes supersedes uncomplicated, severe liver disease
supersedes mild, metastatic tumour supersedes any malignancy.
"""

from __future__ import annotations

from ehr_fed.mapping.study import ConceptSet


def _r(prefix: str, lo: int, hi: int, width: int = 0) -> list[str]:
    """Prefixes ``prefix+lo .. prefix+hi`` (zero-padded to ``width``)."""
    return [f"{prefix}{i:0{width}d}" for i in range(lo, hi + 1)]


#: category -> (weight, ICD-10 prefixes, ICD-9-CM prefixes, SNOMED codes)
CATEGORIES: dict[str, tuple[int, list[str], list[str], list[str]]] = {
    "myocardial_infarction": (1, ["I21", "I22", "I252"], ["410", "412"],
                              ["22298006", "401303003", "401314000", "399211009"]),
    "heart_failure": (1, ["I099", "I110", "I130", "I132", "I255", "I420", "I425", "I426", "I427", "I428", "I429",
                          "I43", "I50", "P290"], ["428"], ["84114007", "88805009", "42343007", "85232009"]),
    "peripheral_vascular": (1, ["I70", "I71", "I731", "I738", "I739", "I771", "I790", "I792", "K551", "K558",
                                "K559", "Z958", "Z959"], ["4439", "441", "7854", "V434"], ["400047006"]),
    "cerebrovascular": (1, ["G45", "G46", "H340"] + _r("I", 60, 69), _r("", 430, 438),
                        ["230690007", "422504002", "266257000"]),
    "dementia": (1, ["F00", "F01", "F02", "F03", "F051", "G30", "G311"], ["290"],
                 ["26929004", "230265002", "52448006"]),
    "chronic_pulmonary": (1, ["I278", "I279"] + _r("J", 40, 47) + _r("J", 60, 67) + ["J684", "J701", "J703"],
                          _r("", 490, 496) + _r("", 500, 505) + ["5064"],
                          ["13645005", "185086009", "87433001", "195967001", "233678006"]),
    "rheumatic": (1, ["M05", "M06", "M315", "M32", "M33", "M34", "M351", "M353", "M360"],
                  ["7100", "7101", "7104", "7140", "7141", "7142", "71481", "725"], ["69896004", "200936003"]),
    "peptic_ulcer": (1, ["K25", "K26", "K27", "K28"], ["531", "532", "533", "534"], ["13200003"]),
    "mild_liver": (1, ["B18", "K700", "K701", "K702", "K703", "K709", "K713", "K714", "K715", "K717", "K73", "K74",
                       "K760", "K762", "K763", "K764", "K768", "K769", "Z944"], ["5712", "5714", "5715", "5716"],
                   ["128302006", "61977001"]),
    "diabetes": (1, [f"E1{d}{s}" for d in "01234" for s in "01689"], ["2500", "2501", "2502", "2503", "2507"],
                 ["44054006", "46635009", "73211009"]),
    "diabetes_complicated": (2, [f"E1{d}{s}" for d in "01234" for s in "23457"],
                             ["2504", "2505", "2506"],
                             ["368581000119106", "422034002", "127013003", "90781000119102", "157141000119108",
                              "1551000119108", "1501000119109", "97331000119101", "60951000119105"]),
    "hemiplegia": (2, ["G041", "G114", "G801", "G802", "G81", "G82", "G830", "G831", "G832", "G833", "G834",
                       "G839"], ["3441", "342"], []),
    "renal": (2, ["I120", "I131", "N032", "N033", "N034", "N035", "N036", "N037", "N052", "N053", "N054", "N055",
                  "N056", "N057", "N18", "N19", "N250", "Z490", "Z491", "Z492", "Z940", "Z992"],
              ["582", "5830", "5831", "5832", "5833", "5834", "5835", "5836", "5837", "585", "586", "588"],
              ["709044004", "433144002", "431857002", "46177005", "714152005"]),
    "malignancy": (2, _r("C", 0, 26, 2) + _r("C", 30, 34) + _r("C", 37, 41) + ["C43"] + _r("C", 45, 58)
                   + _r("C", 60, 76) + _r("C", 81, 85) + ["C88"] + _r("C", 90, 97),
                   _r("", 140, 172) + _r("", 174, 194) + _r("195", 0, 8) + _r("", 200, 208),
                   ["363406005", "254637007", "254632001", "424132000", "93761005", "109838007", "363346000",
                    "254837009", "92691004"]),
    "severe_liver": (3, ["I850", "I859", "I864", "I982", "K704", "K711", "K721", "K729", "K765", "K766", "K767"],
                     ["4560", "4561", "45620", "45621"] + _r("572", 2, 8), []),
    "metastatic": (6, ["C77", "C78", "C79", "C80"], ["196", "197", "198", "1990", "1991"], ["94260004"]),
    "hiv_aids": (6, ["B20", "B21", "B22", "B24"], ["042", "043", "044"], ["86406008", "62479008"]),
}

#: (superseding category, superseded category)
HIERARCHY = (("diabetes_complicated", "diabetes"), ("severe_liver", "mild_liver"), ("metastatic", "malignancy"))

PREFIX = "charlson__"


def concept_sets() -> dict[str, ConceptSet]:
    """One concept set per category, named ``charlson__<category>``."""
    return {f"{PREFIX}{name}": ConceptSet(icd10cm=icd10, icd10=icd10, icd9cm=icd9, snomed=snomed)
            for name, (_, icd10, icd9, snomed) in CATEGORIES.items()}


def weight_rows() -> list[tuple[str, int, str | None]]:
    """``(concept set, weight, superseding concept set or None)`` per category."""
    above = {low: high for high, low in HIERARCHY}
    return [(f"{PREFIX}{name}", weight, f"{PREFIX}{above[name]}" if name in above else None)
            for name, (weight, *_rest) in CATEGORIES.items()]
