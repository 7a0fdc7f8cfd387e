"""``python -m hacontrol``: the ``hacontrol`` command."""

from hacontrol.cli.main import main

main()
