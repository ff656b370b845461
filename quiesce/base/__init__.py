"""The base layer: errors and exit codes, paths, settings, logging, safe file handling.

Imports nothing else of quiesce; every other layer builds on it.
"""
