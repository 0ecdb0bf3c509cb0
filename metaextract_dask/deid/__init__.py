"""DICOM de-identification per DICOM PS3.15 Annex E (Basic Application Level Confidentiality Profile with
options), keyed and consistent across files, processes and runs.

- :mod:`.keys`: the secret key (``keygen``, ``load_key``) and the keyed derivations (UIDs, pseudonyms, dates).
- :mod:`.profile`: Table E.1-1 as data and its application to a pydicom dataset.
- :mod:`.run`: de-identified copies of a collection, as a Dask graph of batches (resumable).
- :mod:`.verify`: the leak check of copies and catalogs against the originals.
"""

from metaextract_dask.deid.keys import DeidKeyError, SecretKey, keygen, load_key
from metaextract_dask.deid.profile import OPTIONS, Profile, burned_in_reasons, table_source

__all__ = ["DeidKeyError", "OPTIONS", "Profile", "SecretKey", "burned_in_reasons", "keygen", "load_key",
           "table_source"]
