"""Helpers and fixtures shared by the test modules (loaded by ``tests/conftest.py``)."""
