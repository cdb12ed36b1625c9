"""``python -m switchboard.cli``: the ``switchboard`` command."""

from switchboard.cli.root import main

main()
