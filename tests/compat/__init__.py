"""Compatibility tests: the real mxnet and DALI readers, run in their own virtual environments.

A package, so that this folder's ``conftest.py`` gets its own module name and
does not shadow ``tests/conftest.py`` (imported by other test files as ``conftest``).
"""
