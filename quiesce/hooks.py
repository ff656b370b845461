"""Entry points for hook runners: VMware Tools, qemu-guest-agent and no-argument agents.

Hook runners pass no environment and no useful arguments beyond the action, so these
take their settings from the config file only. A thaw (or freezeFail) reaches the holder
through fastthaw before the command line machinery is even imported: writers may be
waiting for it.
"""

import sys

_RELEASING_ACTIONS = ("thaw", "freezefail")


def _run(argv):
    answer = None
    if len(argv) > 1 and argv[1].lower() in _RELEASING_ACTIONS:
        from . import fastthaw
        answer = fastthaw.release(argv)
    from . import cli
    return cli.main(argv, early_thaw=answer)


def hook_main() -> None:
    """<hook> ACTION [EXTRA...], as VMware Tools and qemu-ga call it."""
    sys.exit(_run(["hook"] + sys.argv[1:]))


def freeze_main() -> None:
    """A pre-snapshot script: arguments, if any, are ignored."""
    sys.exit(_run(["hook", "freeze"]))


def thaw_main() -> None:
    """A post-snapshot script: arguments, if any, are ignored."""
    sys.exit(_run(["hook", "thaw"]))
