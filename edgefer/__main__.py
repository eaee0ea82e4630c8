"""``python -m edgefer`` runs the command line."""

import sys

from edgefer.cli import main

sys.exit(main())
