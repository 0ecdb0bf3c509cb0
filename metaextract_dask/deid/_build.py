"""Build the package's copy of PS3.15 Table E.1-1 (``ps315_e1_1.json``) from the parsed standard.

Run from the project root::

    python -m metaextract_dask.deid._build ../shared/dicom-standard/confidentiality_profile_attributes.json

The output keeps every row and every option column, with the tag parsed into a (group, element) pattern
(``x`` digits of the repeating groups kept as a mask) and the option columns under our option names.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["OPTION_COLUMNS", "SOURCE", "build_table"]

#: Option column of the source -> our option name (also the CLI's ``--option`` values).
OPTION_COLUMNS: dict[str, str] = {
    "rtnSafePrivOpt": "retain-safe-private",
    "rtnUIDsOpt": "retain-uids",
    "rtnDevIdOpt": "retain-device-identity",
    "rtnInstIdOpt": "retain-institution-identity",
    "rtnPatCharsOpt": "retain-patient-characteristics",
    "rtnLongFullDatesOpt": "retain-long-full-dates",
    "rtnLongModifDatesOpt": "retain-long-modified-dates",
    "cleanDescOpt": "clean-descriptors",
    "cleanStructContOpt": "clean-structured-content",
    "cleanGraphOpt": "clean-graphics",
}

SOURCE = {
    "title": "DICOM PS3.15 Annex E, Table E.1-1 Application Level Confidentiality Profile Attributes",
    "parsed_by": "innolitics/dicom-standard, file standard/confidentiality_profile_attributes.json",
    "edition": "the edition current on 2025-01-28 (date the source was regenerated from the standard)",
    "source_date": "2025-01-28",
    "licence": "MIT (innolitics/dicom-standard; see NOTICE in this folder). The DICOM Standard is published "
               "by NEMA.",
}


def _pattern(tag: str) -> tuple[str, str] | None:
    """'(50XX,XXXX)' -> ('50xx', 'xxxx'); None for the private-attributes row."""
    text = tag.strip("()").lower()
    if "," not in text or len(text) != 9:
        return None
    group, elem = text.split(",")
    return group, elem


def build_table(source: list[dict[str, Any]]) -> dict[str, Any]:
    """Our table from the parsed rows (one entry per row, none dropped)."""
    rows = []
    for r in source:
        pat = _pattern(r["tag"])
        rows.append({
            "tag": f"{pat[0]}{pat[1]}" if pat else "private",
            "name": r["name"],
            "in_std_iod": r.get("stdCompIOD") == "Y",
            "basic": r["basicProfile"],
            "options": {ours: r[col] for col, ours in OPTION_COLUMNS.items() if r.get(col)},
        })
    rows.sort(key=lambda row: row["tag"])
    return {"source": SOURCE, "attributes": rows}


def main(argv: list[str] | None = None) -> None:
    """Write ``ps315_e1_1.json`` beside this module from the source file named in `argv`."""
    src = Path((argv or sys.argv[1:])[0])
    table = build_table(json.loads(src.read_text()))
    out = Path(__file__).with_name("ps315_e1_1.json")
    out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({len(table['attributes'])} attributes)")


if __name__ == "__main__":
    main()
