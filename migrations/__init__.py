"""Alembic's environment and revision scripts, shipped inside the package (wheel included)."""
