"""The edges that talk to PostgreSQL, processes and files."""
