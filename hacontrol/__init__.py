"""hacontrol: a PostgreSQL high-availability failover controller."""

__version__ = "0.1.0"
