"""Synthetic hospitals: FHIR and OMOP forms of the same patients, with known ground truth.

``generate_federation(out, n_sites, n_patients, seed, format)`` (or ``ehr-fed synth``) writes
one folder per hospital::

    site_a/fhir/<Type>.000.ndjson.gz   FHIR R4 bulk export: Patient, Encounter, Condition,
                                       Observation, MedicationRequest, Procedure
    site_a/omop.duckdb                 the same patients in OMOP CDM v5.4 as an OHDSI ETL writes them
                                       (person, visit_occurrence, condition_occurrence, measurement,
                                       drug_exposure, procedure_occurrence, death, observation_period)
                                       with the OHDSI vocabulary subset they use (concept,
                                       concept_relationship, concept_ancestor, domain, vocabulary,
                                       concept_class, relationship; :mod:`ehr_fed.synth.vocabulary`)
    site_a/mapping_fhir.yaml           the site's mapping config for each form
    site_a/mapping_omop.yaml
    site_a/truth.parquet               site-only: the true risk of every index event (not a model input)
    federation.yaml                    study, sites, transport, privacy policy, keys
    <study>.yaml, synth-manifest.json  the study spec named by the federation; the parameters

Data-generating process
-----------------------
Sites (:mod:`ehr_fed.synth.profiles`): site 0 is an academic centre (large, older and sicker,
longer stays, ICD-10-CM, LOINC labs, v3 ActCode ``IMP``/``EMER``); the last site of three or
more is a small rural hospital (older, SNOMED CT, its own lab codes and units - creatinine
umol/L, hemoglobin g/L, glucose mmol/L -, its own encounter classes, 25 % missing labs); the
others are community hospitals, alternately SNOMED CT with LOINC labs in other units and
spellings (``umol/l``, ``mmol/l``) and v3 ``ACUTE`` stays, or ICD-10-CM with local encounter
classes and OMOP place-of-service visit concepts (8717/8870). Every site has its own baseline
shift of both outcome models. FHIR times carry the site's UTC offset; OMOP holds UTC.

Patients (:mod:`ehr_fed.synth.patients`), over 2018-2023: sex; age (mostly around 67 years,
shifted per site); a latent frailty; nine chronic conditions whose odds rise with age,
frailty, the site's case mix and each other (CKD with diabetes and hypertension, heart failure
with hypertension and myocardial infarction), present at entry or diagnosed later; a
glycaemic state (diabetic, prediabetic, normal) fixing HbA1c; baseline creatinine (doubled by
CKD; eGFR by CKD-EPI 2021), hemoglobin, sodium and glucose, with acute deviations in hospital.
Outpatient visits (about one a year, more when sicker) carry labs, diagnoses and yearly
renewals of the chronic drugs; ED visits follow a frailty-driven Poisson process.

Readmission (study ``readmission_30d``): first admission after an exponential time whose rate
grows with frailty, comorbidity and age; 70 % are emergency admissions through the ED; length
of stay is log-normal (median about 3 days, longer when older, sicker, at the academic centre).
Each stay records its diagnoses, a lab panel (each lab missing with the site's probability; a
second creatinine and sodium before discharge in longer stays), procedures and discharge drugs.
At each discharge the true risk is computed from the state at discharge with the known model of
:mod:`ehr_fed.synth.model` (non-linear terms and interactions, site shift) and the next
admission is drawn within 30 days with that probability, else more than 30 days later (or never,
possibly after death). A readmission starting after 2023 is censored: its own label is 0 and
``censored`` is true in ``truth.parquet``.

T2D progression (study ``t2d_progression``): at a prediabetic patient's first finding (HbA1c
5.7-6.4 % at an outpatient visit, or a coded prediabetes diagnosis) the true risk is computed
and progression - a T2D diagnosis and an HbA1c >= 6.5 % at the same visit - is drawn inside the
3-year horizon with that probability, else it never happens. Normal patients' HbA1c stays
below 5.7 %, diabetic patients' at or above 6.5 %.

The true risks are returned per index event in ``truth.parquet`` (keyed by ``person_key``,
computed as the cohort stage does, and ``index_time``), and :func:`true_risk` recomputes them
from any feature table. :func:`describe` returns this process as data.
"""

from ehr_fed.synth.describe import describe
from ehr_fed.synth.generate import generate_federation, generate_site, person_key
from ehr_fed.synth.model import readmission_risk, t2d_risk, true_risk
from ehr_fed.synth.profiles import SiteProfile, default_profiles

__all__ = [
    "SiteProfile", "default_profiles", "describe", "generate_federation", "generate_site", "person_key",
    "readmission_risk", "t2d_risk", "true_risk",
]
