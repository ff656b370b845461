"""Entry points for hook runners: VMware Tools, qemu-guest-agent and no-argument agents.

Hook runners pass no environment and no useful arguments beyond the action, so these
take their settings from the config file only.
"""

import sys

from . import cli


def hook_main() -> None:
    """<hook> ACTION [EXTRA...], as VMware Tools and qemu-ga call it."""
    sys.exit(cli.main(["hook"] + sys.argv[1:]))


def freeze_main() -> None:
    """A pre-snapshot script: arguments, if any, are ignored."""
    sys.exit(cli.main(["hook", "freeze"]))


def thaw_main() -> None:
    """A post-snapshot script: arguments, if any, are ignored."""
    sys.exit(cli.main(["hook", "thaw"]))
