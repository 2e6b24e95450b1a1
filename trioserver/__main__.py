"""``python -m trioserver``: the same as the `trioserver` command."""

from trioserver.cli import main

main()
