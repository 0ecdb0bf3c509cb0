"""De-identification pipeline: DICOM files -> de-identified copies (-> their catalog), checked for leaks.

    python -m pipelines.deid --config conf/deid.yaml [--set output=other-dir]

Writes de-identified copies of the DICOM files under ``inputs`` to ``output`` (PS3.15 Basic Profile with
``options``, UIDs and identifiers keyed on ``key-file``), prints the dashboard link, progress and the summary;
with ``catalog`` scans the copies into a catalog; with ``verify: true`` runs the leak check against the
originals and exits 1 on any leak. A re-run continues where a killed one stopped.
"""

from __future__ import annotations

import sys
from typing import Any

from pipelines._job import Key, cluster_client, main_for

__all__ = ["KEYS", "run", "main"]

KEYS: dict[str, Key] = {
    "inputs": Key(list, required=True, path="in", help="DICOM files and directories"),
    "output": Key(str, required=True, path="out", help="OUT_DIR for the de-identified copies"),
    "key-file": Key(str, required=True, path="in", help="the key (metaextract-dask keygen KEYFILE)"),
    "options": Key(list, default=[], help="profile options, e.g. [retain-long-modified-dates]"),
    "safe-private": Key(list, default=[], help="more safe private attributes, 'CREATOR (gggg,xxee)'"),
    "map-file": Key((str, type(None)), path="out", help="original -> pseudonym table (never inside output)"),
    "catalog": Key((str, type(None)), path="out", help="scan the copies into this catalog"),
    "copy-flagged": Key(bool, default=False, help="copy files flagged for burned-in text too"),
    "verify": Key(bool, default=True, help="run the leak check afterwards (exit 1 on a leak)"),
}


def run(job: dict[str, Any]) -> dict[str, Any]:
    """De-identify (and check) as the job says; returns ``{"summary", "verify"}``."""
    from metaextract_dask.deid.run import deidentify
    from metaextract_dask.deid.verify import verify

    with cluster_client(job) as client:
        summary = deidentify(job["inputs"], job["output"], key=job["key-file"], options=job["options"],
                             safe_private=job["safe-private"], map_file=job["map-file"], catalog=job["catalog"],
                             copy_flagged=job["copy-flagged"], client=client, progress=True)
    print(summary.format())
    report = None
    if job["verify"]:
        report = verify(job["output"], job["inputs"], catalogs=[job["catalog"]] if job["catalog"] else [])
        print(report.format())
    return {"summary": summary, "verify": report}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (exit 1 when the leak check finds anything)."""
    result: dict[str, Any] = {}

    def run_and_keep(job: dict[str, Any]) -> dict[str, Any]:
        result.update(run(job))
        return result

    status = main_for("deid", __doc__ or "", KEYS, run_and_keep, argv)
    if status == 0 and result.get("verify") is not None and not result["verify"].ok:
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
