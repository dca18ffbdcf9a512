"""``python -m edge_runtime`` runs the command-line tool."""

import sys

from edge_runtime.cli import main

sys.exit(main())
