"""The ``hacontrol`` command line: commands, API client, rendering, demo and local cluster."""
