"""``python -m switchboard.cli``: the ``switchboard`` command."""

from switchboard.cli.main import main

main()
