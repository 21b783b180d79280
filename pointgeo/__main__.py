"""``python -m pointgeo`` runs the ``pointgeo`` command (which opts in to pointgeo's CPU memory settings first)."""

from pointgeo.cli import main

main()
