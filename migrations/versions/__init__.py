"""Revision scripts; alembic loads them by path (their names are not importable)."""
