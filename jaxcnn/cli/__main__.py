"""``python -m jaxcnn.cli``: the ``jaxcnn`` command."""

import sys

from jaxcnn.cli.main import run

sys.exit(run())
