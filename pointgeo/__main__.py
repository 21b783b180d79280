"""``python -m pointgeo`` runs the ``pointgeo`` command."""

from pointgeo.cli import main

main()
