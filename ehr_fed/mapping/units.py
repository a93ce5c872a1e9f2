"""UCUM units and the conversions of the study labs to their canonical units.

Conversions depend on the analyte (mmol/L -> mg/dL is x18.016 for glucose but
not for creatinine), so they are keyed by the analyte name of a study lab
(its ``analyte:`` key, by default the lab's name). A value is converted as
``canonical = value * factor + offset``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: UCUM units a mapping may map local spellings to (and a study may declare)
KNOWN_UCUM: tuple[str, ...] = (
    "%", "mg/dL", "umol/L", "g/dL", "g/L", "mmol/L", "mEq/L", "mmol/mol", "mL/min/{1.73_m2}",
    "mL/min", "mg/L", "ug/L", "ng/mL", "pg/mL", "U/L", "10*3/uL", "10*6/uL", "fL", "pg",
    "kg", "g", "cm", "m", "kg/m2", "mm[Hg]", "/min", "Cel", "[degF]", "a", "mo", "wk", "d", "h", "min",
    "s", "1", "{score}", "{count}", "[lb_av]", "[in_i]", "L", "mL",
)


@dataclass(frozen=True)
class Conversion:
    """``canonical = value * factor + offset`` from ``from_unit`` to ``to_unit``."""

    from_unit: str
    to_unit: str
    factor: float = 1.0
    offset: float = 0.0

    def apply(self, value: float) -> float:
        return value * self.factor + self.offset


#: analyte -> conversions into its canonical unit (the identity is implied)
CONVERSIONS: dict[str, tuple[Conversion, ...]] = {
    "creatinine": (Conversion("umol/L", "mg/dL", 1 / 88.42),),
    "glucose": (Conversion("mmol/L", "mg/dL", 18.016),),
    "hemoglobin": (Conversion("g/L", "g/dL", 0.1),),
    "hba1c": (Conversion("mmol/mol", "%", 1 / 10.929, 2.15),),
    "sodium": (Conversion("mEq/L", "mmol/L", 1.0),),
    "egfr": (),
}


#: other UCUM expressions of a known unit, as OMOP unit concepts spell them in ``concept_code``
#: (OHDSI concept 720870 "milliliter per minute per 1.73 square meter")
UCUM_EQUIVALENTS: dict[str, str] = {"mL/min/(173.10*-2.m2)": "mL/min/{1.73_m2}"}


def canonical_ucum(unit: str | None, site_units: dict[str, str] | None = None) -> str | None:
    """UCUM spelling of a local unit, or None when it is unknown.

    The site mapping's ``units:`` table wins (exact key, then case-insensitive);
    otherwise a spelling equal to a known UCUM unit (or one of :data:`UCUM_EQUIVALENTS`)
    up to case is accepted.
    """
    if unit is None:
        return None
    raw = str(unit).strip()
    site_units = site_units or {}
    if raw in site_units:
        return site_units[raw]
    lower = raw.lower()
    for key, value in site_units.items():
        if key.strip().lower() == lower:
            return value
    for known in KNOWN_UCUM:
        if known.lower() == lower:
            return known
    for spelling, known in UCUM_EQUIVALENTS.items():
        if spelling.lower() == lower:
            return known
    return None


def conversion_table(analyte: str, canonical: str) -> dict[str, Conversion]:
    """Every unit accepted for ``analyte`` -> its conversion to ``canonical`` (identity included)."""
    table = {canonical: Conversion(canonical, canonical)}
    for conv in CONVERSIONS.get(analyte, ()):
        if conv.to_unit == canonical:
            table[conv.from_unit] = conv
    return table
