"""``python -m ecp`` runs the command line."""

from ecp.cli import main

main()
