"""Open the pointgeo inspection viewer: ``python -m pointgeo.apps.view MODEL [--file F | --index I] [--snapshot P]``."""

import sys

from pointgeo.viz.viewer import cli

if __name__ == "__main__":
    cli(sys.argv[1:])
