"""PS3.15 Basic Application Level Confidentiality Profile with options, applied to pydicom datasets.

The profile is data: ``ps315_e1_1.json`` (Table E.1-1, built by :mod:`._build`). For every element the
action comes from its row (exact tag, or the repeating groups 50xx / 60xx), overridden by the row's column of
each option in force; attributes not in the table are kept, private ones removed (unless the Retain Safe
Private option keeps a listed one). Actions:

``X`` remove; ``Z`` zero length (identifiers get a keyed pseudonym, a dummy value consistent across files);
``D`` keyed pseudonym or a dummy of the VR; ``K`` keep (sequences cleaned recursively); ``C`` clean: dates
shifted by a per-patient offset (modified dates), text scrubbed of this object's removed identifiers,
sequences cleaned recursively; ``U`` a ``2.25.`` UID keyed on the original.

Combined codes (``X/Z``, ``X/D``, ``X/Z/D``, ``Z/D``, ``X/Z/U*``) take the first (strictest) code unless the
object's IOD makes the attribute Type 1 (then ``D``, or ``U`` for ``U*``) or Type 2 (then ``Z``), as far as
:data:`REQUIRED_TYPES` knows it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from metaextract_dask.deid._build import OPTION_COLUMNS
from metaextract_dask.deid.keys import SecretKey

__all__ = ["CID7050", "OPTIONS", "REQUIRED_TYPES", "DEFAULT_SAFE_PRIVATE", "Outcome", "Profile", "Rule",
           "burned_in_reasons", "load_table", "parse_safe_private", "table_source"]

#: Option names (the ``--option`` values), in the table's column order.
OPTIONS: tuple[str, ...] = tuple(OPTION_COLUMNS.values())

#: CID 7050 De-identification Method codes (coding scheme DCM) of the profile and of each option.
CID7050: dict[str, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "retain-safe-private": ("113111", "Retain Safe Private Option"),
    "retain-uids": ("113110", "Retain UIDs Option"),
    "retain-device-identity": ("113109", "Retain Device Identity Option"),
    "retain-institution-identity": ("113112", "Retain Institution Identity Option"),
    "retain-patient-characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain-long-full-dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain-long-modified-dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "clean-descriptors": ("113105", "Clean Descriptors Option"),
    "clean-structured-content": ("113104", "Clean Structured Content Option"),
    "clean-graphics": ("113103", "Clean Graphics Option"),
}

# Multi-frame "enhanced" IODs: their Enhanced General Equipment, Multi-frame Functional Groups and Enhanced
# image modules make these attributes Type 1 (PS3.3 C.7.5.2, C.7.6.16, C.8.13.1 and kin).
_ENHANCED = frozenset({
    "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2",  # Enhanced / Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.3", "1.2.840.10008.5.1.4.1.1.4.4",  # MR
    "1.2.840.10008.5.1.4.1.1.128.1", "1.2.840.10008.5.1.4.1.1.130",  # Legacy Converted / Enhanced PET
    "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
    "1.2.840.10008.5.1.4.1.1.12.1.1", "1.2.840.10008.5.1.4.1.1.12.2.1",  # Enhanced XA / XRF
    "1.2.840.10008.5.1.4.1.1.13.1.3", "1.2.840.10008.5.1.4.1.1.13.1.4", "1.2.840.10008.5.1.4.1.1.13.1.5",  # DBT
})
#: Tag -> (Type in enhanced multi-frame IODs, Type elsewhere) for attributes with a combined code whose
#: Type is known to depend on the IOD; None: optional (Type 3) or unknown, so the strictest code applies.
REQUIRED_TYPES: dict[int, tuple[int | None, int | None]] = {
    0x00080023: (1, None),  # Content Date: Multi-frame Functional Groups (1); General Image 2C
    0x00080033: (1, None),  # Content Time
    0x0008002A: (1, None),  # Acquisition DateTime: Enhanced MR/CT/XA image modules 1C
    0x00181000: (1, None),  # Device Serial Number: Enhanced General Equipment (1); General Equipment 3
    0x00100020: (2, 2),     # Patient ID: Patient module (2), every composite IOD
}

#: Safe private attributes kept by the Retain Safe Private option: (private creator, group, element byte).
#: From PS3.15 Table E.3.10-1 examples of attributes known to hold no identifying information; extend it with
#: ``metaextract.deid.safe-private`` or ``--safe-private``.
DEFAULT_SAFE_PRIVATE: tuple[str, ...] = (
    "SIEMENS MR HEADER (0019,xx0C)",  # B_value
    "SIEMENS MR HEADER (0019,xx0D)",  # DiffusionDirectionality
    "SIEMENS MR HEADER (0019,xx0E)",  # DiffusionGradientDirection
    "SIEMENS MR HEADER (0019,xx27)",  # B_matrix
    "GEMS_PARM_01 (0043,xx39)",  # slop_int_6..9 (b-value)
    "GEMS_ACQU_01 (0019,xxBB)",  # user data
    "Philips Imaging DD 001 (2001,xx03)",  # Diffusion B-Factor
    "Philips MR Imaging DD 001 (2005,xx0D)",  # scale intercept
    "Philips MR Imaging DD 001 (2005,xx0E)",  # scale slope
)

_SAFE_RE = re.compile(r"^\s*(?P<creator>.*?)\s*\(\s*(?P<group>[0-9A-Fa-f]{4})\s*,\s*[xX]{2}(?P<elem>[0-9A-Fa-f]{2})\s*\)\s*$")
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                       "UR", "UT"})
_DUMMY_TEXT = {"AS": "000Y", "DA": "19000101", "DS": "0", "DT": "19000101000000", "IS": "0", "TM": "000000",
               "UR": "http://example.invalid/"}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBER_VRS = frozenset({"FL", "FD", "SL", "SS", "SV", "UL", "US", "UV", "AT"})
# Identifiers replaced by a keyed pseudonym (kind, max length) when the profile zeroes or dummies them, so
# that objects of one patient / study still agree with each other.
_PSEUDONYMS: dict[int, tuple[str, int]] = {
    0x00100020: ("patient-id", 16),
    0x00080050: ("accession", 16),
    0x00200010: ("study-id", 16),
    0x00401001: ("requested-procedure-id", 16),
    0x00400253: ("procedure-step-id", 16),
}
_PATIENT_NAME = 0x00100010
_SHIFT_RANGE = (-3652, -366)  # modified dates move 1 to 10 years back, per patient


@dataclass(frozen=True)
class Rule:
    """One row of Table E.1-1."""

    tag: str
    name: str
    basic: str
    options: dict[str, str]
    in_std_iod: bool


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    return json.loads(resources.files("metaextract_dask.deid").joinpath("ps315_e1_1.json").read_text())


def load_table() -> dict[str, Rule]:
    """The packaged Table E.1-1: tag pattern (``ggggeeee``, ``x`` for repeating digits, or ``private``)
    -> rule."""
    return {r["tag"]: Rule(r["tag"], r["name"], r["basic"], dict(r["options"]), r["in_std_iod"])
            for r in _table()["attributes"]}


def table_source() -> dict[str, str]:
    """Where the packaged table comes from: title, edition, source date, licence."""
    return dict(_table()["source"])


def parse_safe_private(entries: Iterable[str]) -> frozenset[tuple[str, int, int]]:
    """``"CREATOR (gggg,xxee)"`` strings -> {(CREATOR, group, element byte)}.

    Raises
    ------
    ValueError
        For an entry not in that form, or with an even group.
    """
    out = set()
    for entry in entries:
        m = _SAFE_RE.match(str(entry))
        if not m or not m["creator"]:
            raise ValueError(f"safe private attribute {entry!r} is not of the form 'CREATOR (gggg,xxee)'")
        group = int(m["group"], 16)
        if group % 2 == 0:
            raise ValueError(f"safe private attribute {entry!r}: group {group:04X} is not private (odd)")
        out.add((m["creator"].strip().upper(), group, int(m["elem"], 16)))
    return frozenset(out)


def burned_in_reasons(ds: Any) -> list[str]:
    """Why `ds` may carry burned-in identifying text (empty: no known reason)."""
    reasons = []
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned and burned != "NO":
        reasons.append(f"BurnedInAnnotation is {burned}")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in ("US", "SC", "XC", "ES", "GM", "SM"):
        reasons.append(f"modality {modality} (burned-in text likely)")
    sop = str(ds.get("SOPClassUID", "") or "")
    if sop.startswith("1.2.840.10008.5.1.4.1.1.7"):
        reasons.append("secondary capture SOP class")
    try:
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    except Exception:  # an unparsable ImageType says nothing either way
        image_type = []
    if len(image_type) > 1 and image_type[1] == "SECONDARY":
        reasons.append("ImageType SECONDARY")
    return reasons


@dataclass
class Outcome:
    """What :meth:`Profile.apply` did to one object."""

    #: (tag, action, original text) of every removed or replaced value (when asked to collect).
    removed: list[tuple[str, str, str]] = field(default_factory=list)
    #: (kind, original, pseudonym) of every keyed replacement (when asked for the map).
    mapping: list[tuple[str, str, str]] = field(default_factory=list)
    #: Values kept as they were (when collecting), so a checker does not call them leaks.
    kept: set[str] = field(default_factory=set)


class _Walk:
    """State of one object's de-identification (patient offset, collected values, deferred cleaning)."""

    def __init__(self, profile: Profile, sop_class: str, patient: str, collect: bool, mapping: bool) -> None:
        self.p = profile
        self.enhanced = sop_class in _ENHANCED
        self.patient = patient
        self.offset = (profile.key.days(patient, *_SHIFT_RANGE) if profile.shift_dates else 0)
        self.collect = collect
        self.outcome = Outcome()
        self.want_map = mapping
        self.identifiers: set[str] = set()  # texts removed from this object: scrubbed out of cleaned text
        self.to_clean: list[tuple[Any, int]] = []


class Profile:
    """The Basic Profile with `options`, keyed by `key`.

    Parameters
    ----------
    key : SecretKey
        Every UID, pseudonym and date offset is keyed on it.
    options : iterable of str
        Names from :data:`OPTIONS`.
    safe_private : iterable of str
        Extra safe private attributes (``"CREATOR (gggg,xxee)"``) on top of :data:`DEFAULT_SAFE_PRIVATE`;
        used with ``retain-safe-private``.

    Raises
    ------
    ValueError
        For an unknown option, or both longitudinal date options at once.
    """

    def __init__(self, key: SecretKey, options: Iterable[str] = (), safe_private: Iterable[str] = ()) -> None:
        if not isinstance(key, SecretKey):
            raise TypeError("key must be a SecretKey (see metaextract_dask.deid.load_key)")
        opts = tuple(dict.fromkeys(str(o).strip() for o in options))
        unknown = [o for o in opts if o not in OPTIONS]
        if unknown:
            raise ValueError(f"unknown de-identification option(s) {unknown}; known: {', '.join(OPTIONS)}")
        if {"retain-long-full-dates", "retain-long-modified-dates"} <= set(opts):
            raise ValueError("retain-long-full-dates and retain-long-modified-dates exclude each other")
        self.key = key
        self.options = tuple(o for o in OPTIONS if o in opts)
        self.safe_private = parse_safe_private([*DEFAULT_SAFE_PRIVATE, *safe_private])
        self.shift_dates = "retain-long-modified-dates" in self.options
        # Cleaned text is scrubbed of the object's removed values: only then must they be gathered.
        self._cleans = self.shift_dates or any(o.startswith("clean-") or o in (
            "retain-device-identity", "retain-patient-characteristics") for o in self.options)
        self._rules = load_table()
        self._private_rule = self._rules["private"]
        self._cache: dict[tuple[int, bool], tuple[str, Rule | None]] = {}

    def __repr__(self) -> str:
        return f"Profile(options={list(self.options)}, key={self.key!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        extra = sorted(f"{c} ({g:04X},xx{e:02X})" for c, g, e in self.safe_private)
        return (Profile, (self.key, self.options, extra))

    # ------------------------------------------------------------------ actions
    def rule(self, tag: int) -> Rule | None:
        """The table row of `tag` (repeating groups included), None when the table does not list it."""
        rule = self._rules.get(f"{tag:08x}")
        if rule is None:
            group, elem = tag >> 16, tag & 0xFFFF
            if 0x5000 <= group <= 0x50FF and group % 2 == 0:
                rule = self._rules.get("50xxxxxx")
            elif 0x6000 <= group <= 0x60FF and group % 2 == 0:
                rule = self._rules.get(f"60xx{elem:04x}")
        return rule

    def action(self, tag: int, enhanced: bool = False) -> str:
        """The single action (X, Z, D, K, C or U) for a public `tag` in an object of an enhanced IOD or not."""
        hit = self._cache.get((tag, enhanced))
        if hit is None:
            rule = self.rule(tag)
            hit = self._cache[(tag, enhanced)] = (self._resolve(tag, rule, enhanced), rule)
        return hit[0]

    def _resolve(self, tag: int, rule: Rule | None, enhanced: bool) -> str:
        if rule is None:
            return "K"
        codes = [rule.options[o] for o in self.options if o in rule.options]
        date_opt = next((rule.options[o] for o in ("retain-long-full-dates", "retain-long-modified-dates")
                         if o in self.options and o in rule.options), None)
        if date_opt:
            return date_opt
        if "K" in codes:
            return "K"
        if "C" in codes:
            return "C"
        parts = [c.rstrip("*") for c in rule.basic.split("/")]
        if len(parts) == 1:
            return parts[0]
        required = REQUIRED_TYPES.get(tag, (None, None))[0 if enhanced else 1]
        if required == 1:
            return "U" if "U" in parts else "D" if "D" in parts else parts[-1]
        if required == 2:
            return "Z" if "Z" in parts else "D" if "D" in parts else parts[-1]
        return parts[0]

    # ------------------------------------------------------------------ apply
    def apply(self, ds: Any, *, collect: bool = False, mapping: bool = False) -> Outcome:
        """De-identify `ds` (and its file meta) in place.

        Parameters
        ----------
        collect : bool
            Record every removed or replaced original value (for the leak check) in the outcome.
        mapping : bool
            Record (kind, original, pseudonym) of every keyed replacement (for ``--map-file``).
        """
        patient = str(_value_or(ds, 0x00100020) or _value_or(ds, 0x00100010) or "")
        walk = _Walk(self, str(_value_or(ds, 0x00080016) or ""), patient, collect, mapping)
        meta = getattr(ds, "file_meta", None)
        self._walk(ds, walk)
        if meta is not None:
            self._walk(meta, walk)
        for owner, tag in walk.to_clean:  # text to clean once every identifier of the object is known
            elem = owner[tag]
            cleaned = [self._scrub(str(v), walk.identifiers) for v in _values(elem.value)]
            elem.value = cleaned if len(cleaned) != 1 else cleaned[0]
        if self.shift_dates and walk.want_map and patient:
            walk.outcome.mapping.append(("date-offset-days", patient, str(walk.offset)))
        self._mark(ds)
        return walk.outcome

    def scrub(self, text: str, outcome: Outcome) -> str:
        """`text` with every removed value of `outcome` (collected) masked (for messages about the object)."""
        return self._scrub(text, {v for _, _, v in outcome.removed})

    @staticmethod
    def _scrub(text: str, identifiers: set[str]) -> str:
        for value in sorted(identifiers, key=len, reverse=True):
            if len(value) >= 3 and value.lower() in text.lower():
                text = re.sub(re.escape(value), "*" * len(value), text, flags=re.IGNORECASE)
        return text

    def _walk(self, ds: Any, walk: _Walk) -> None:
        private_blocks: dict[int, list[int]] = {}  # private creator tag -> kept element tags
        for tag in list(ds.keys()):
            tag = int(tag)
            group = tag >> 16
            if group % 2:
                self._private(ds, tag, walk, private_blocks)
                continue
            code = self.action(tag, walk.enhanced)
            if tag & 0xFFFF == 0 and group != 2:  # a group length: stale once elements go (and retired)
                del ds[tag]
                continue
            if code == "K" and not walk.collect and _known_vr(ds, tag) not in (None, "SQ", "UN"):
                continue  # kept as it is: no need to decode the value
            if code == "X":
                self._note(walk, ds, tag, "X")
                del ds[tag]
                continue
            try:
                elem = ds[tag]
            except Exception:  # a value that does not parse: only removal is safe
                del ds[tag]
                continue
            vr = str(elem.VR)
            if vr == "SQ":
                if code == "Z":
                    self._note(walk, ds, tag, "Z")
                    elem.value = []
                else:  # K, C, D, U (U*: contained UIDs replaced by their own rows)
                    for item in elem.value:
                        self._walk(item, walk)
                continue
            if code == "K":
                if walk.collect:
                    walk.outcome.kept.update(_texts(elem))
                continue
            if code == "C":
                self._clean(ds, tag, elem, vr, walk)
                continue
            self._note(walk, ds, tag, code, elem)
            if code == "U":
                elem.value = self._uids(elem.value, walk)
            elif code in ("Z", "D"):
                elem.value = self._replacement(tag, vr, code, elem, walk)
        # Private creators of blocks with no kept element go too.
        for creator_tag, kept in private_blocks.items():
            if not kept and creator_tag in ds:
                del ds[creator_tag]

    def _private(self, ds: Any, tag: int, walk: _Walk, blocks: dict[int, list[int]]) -> None:
        group, elem = tag >> 16, tag & 0xFFFF
        if 0x0010 <= elem <= 0x00FF:  # a private creator: kept while a safe element of its block is
            blocks.setdefault(tag, [])
            return
        keep = False
        if "retain-safe-private" in self.options and elem >= 0x1000:
            creator_tag = (group << 16) | (elem >> 8)
            creator = _value_or(ds, creator_tag)
            if creator is not None and (str(creator).strip().upper(), group, elem & 0xFF) in self.safe_private:
                keep = True
                blocks.setdefault(creator_tag, []).append(tag)
        if keep:
            if walk.collect:
                walk.outcome.kept.update(_texts(ds.get_item(tag)))
            return
        self._note(walk, ds, tag, "X")
        del ds[tag]

    def _note(self, walk: _Walk, ds: Any, tag: int, code: str, elem: Any = None) -> None:
        """Remember what is removed: for scrubbing cleaned text, and for the leak check."""
        if not (walk.collect or self._cleans):
            return  # nothing will ask (decoding removed values costs a third of the profile's time)
        if elem is None:
            try:
                elem = ds[tag]
            except Exception:  # an unparsable value: its raw bytes are what a leak would look like
                raw = ds.get_item(tag)
                value = getattr(raw, "value", None)
                texts = _raw_texts(value)
                walk.identifiers.update(texts)
                if walk.collect:
                    walk.outcome.removed.extend((f"{tag:08X}", code, t) for t in texts)
                return
        if str(elem.VR) == "SQ":
            for item in elem.value:  # values inside a removed sequence are removed identifiers too
                for sub in list(item.keys()):
                    self._note(walk, item, int(sub), code)
            return
        texts = _texts(elem)
        walk.identifiers.update(texts)
        if walk.collect:
            walk.outcome.removed.extend((f"{tag:08X}", code, t) for t in texts)

    def _uids(self, value: Any, walk: _Walk) -> Any:
        out = []
        for v in _values(value):
            text = str(v).strip()
            new = self.key.uid(text) if text else text
            if walk.want_map and text:
                walk.outcome.mapping.append(("uid", text, new))
            out.append(new)
        return out if len(out) != 1 else out[0]

    def _replacement(self, tag: int, vr: str, code: str, elem: Any, walk: _Walk) -> Any:
        original = elem.value
        pseudo = _PSEUDONYMS.get(tag)
        if tag == _PATIENT_NAME and walk.patient:
            new = "ANON^" + self.key.pseudonym("patient-id", walk.patient, 12)
            if walk.want_map:
                walk.outcome.mapping.append(("patient-name", str(original), new))
            return new
        if pseudo is not None and original not in (None, ""):
            kind, length = pseudo
            new = self.key.pseudonym(kind, str(original), length)
            if walk.want_map:
                walk.outcome.mapping.append((kind, str(original), new))
            return new
        if code == "Z":
            return None if vr not in _BINARY_VRS else b""
        if vr == "UI":
            return self._uids(original, walk)
        if vr in _NUMBER_VRS:
            return 0
        if vr in _BINARY_VRS:
            return b"\0" * (len(original or b"") + len(original or b"") % 2)
        return _DUMMY_TEXT.get(vr, "ANONYMIZED")

    def _clean(self, ds: Any, tag: int, elem: Any, vr: str, walk: _Walk) -> None:
        if vr in ("DA", "DT") and self.shift_dates:
            self._note(walk, ds, tag, "C", elem)
            shifted = [_shift(str(v), vr, walk.offset) for v in _values(elem.value)]
            elem.value = shifted if len(shifted) != 1 else shifted[0]
        elif vr in ("TM",) and self.shift_dates:
            pass  # whole-day offsets leave times of day as they are
        elif vr in _TEXT_VRS - {"DA", "DT", "TM", "UI"}:
            if walk.collect:
                walk.outcome.kept.update(_texts(elem))
            walk.to_clean.append((ds, tag))
        # binary values (overlays with Clean Graphics) and numbers are kept as they are

    def _mark(self, ds: Any) -> None:
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence as DicomSequence

        source = table_source()
        ds.PatientIdentityRemoved = "YES"
        names = ["PS3.15 E.1-1 Basic Profile"] + [CID7050[o][1][:64] for o in self.options]
        ds.DeidentificationMethod = [f"metaextract-dask {source['source_date']} table"] + names
        items = []
        for name in ("basic", *self.options):
            code = Dataset()
            code.CodeValue, code.CodeMeaning = CID7050[name]
            code.CodingSchemeDesignator = "DCM"
            items.append(code)
        ds.DeidentificationMethodCodeSequence = DicomSequence(items)
        ds.LongitudinalTemporalInformationModified = (
            "MODIFIED" if self.shift_dates else "UNMODIFIED" if "retain-long-full-dates" in self.options
            else "REMOVED")


# --------------------------------------------------------------------------- helpers
def _value_or(ds: Any, tag: int) -> Any:
    try:
        return ds[tag].value if tag in ds else None
    except Exception:  # unparsable: as if absent
        return None


def _known_vr(ds: Any, tag: int) -> str | None:
    """The VR of `tag` without decoding its value (explicit VR, else the dictionary), None if unknown."""
    vr = getattr(ds.get_item(tag), "VR", None)
    if vr:
        return str(vr)
    from pydicom.datadict import dictionary_VR

    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _values(value: Any) -> Sequence[Any]:
    from pydicom.multival import MultiValue

    if value is None:
        return []
    if isinstance(value, (MultiValue, list, tuple)):
        return list(value)
    return [value]  # one value (PersonName iterates over characters: never unpacked)


def _texts(elem: Any) -> list[str]:
    """The element's values as text (PN also as its components), for scrubbing and leak checks."""
    vr = str(getattr(elem, "VR", "UN"))
    if vr in _BINARY_VRS:
        return _raw_texts(elem.value)
    if vr in _NUMBER_VRS or vr == "SQ":
        return []
    out: list[str] = []
    for v in _values(elem.value):
        text = str(v).strip().rstrip("\0").strip()
        if not text:
            continue
        out.append(text)
        if vr == "PN":
            out.extend(p.strip() for p in re.split(r"[\^=]", text) if p.strip())
    return out


def _raw_texts(value: Any) -> list[str]:
    """Printable runs (>= 4 characters) of a binary value: where private text hides in OB/UN."""
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if not isinstance(value, (bytes, bytearray)):
        return []
    runs = re.findall(rb"[\x20-\x7e]{4,}", bytes(value))
    return [r.decode("ascii").strip() for r in runs if r.strip()]


def _shift(value: str, vr: str, days: int) -> str:
    """A DA or DT value moved by `days` (an unparsable value becomes a dummy: never kept)."""
    text = value.strip()
    if not text:
        return text
    digits = text.replace(".", "") if vr == "DA" else text
    try:
        day = dt.date(int(digits[:4]), int(digits[4:6]) if len(digits) >= 6 else 1,
                      int(digits[6:8]) if len(digits) >= 8 else 1)
        moved = (day + dt.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return _DUMMY_TEXT[vr]
    return moved if vr == "DA" else moved + digits[8:]
