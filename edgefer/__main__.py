"""``python -m edgefer`` runs the command line."""

import sys

from edgefer.cli.main import main

sys.exit(main())
