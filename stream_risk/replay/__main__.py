"""`python -m stream_risk.replay ...`: the `stream-risk replay` subcommand on its own."""

import sys

from stream_risk.replay.cli import main

sys.exit(main())
