"""Everything that talks to PostgreSQL. SQL lives only here."""
