"""This machine: running programs as another user, finding PostgreSQL's binaries."""
