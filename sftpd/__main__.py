"""Run `python -m sftpd` as the `sftpd` command."""

import sys

from sftpd.cli import main

sys.exit(main())
