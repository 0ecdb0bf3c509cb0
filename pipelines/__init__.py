"""Scripted batch jobs composed from the public API, configured from ``conf/``."""
