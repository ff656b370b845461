"""Entry points: the quiesce command, and the hook runners' (VMware Tools, qemu-guest-agent,
no-argument agents).

Hook runners pass no environment and no useful arguments beyond the action, so the hooks
take their settings from the config file only. A thaw (or freezeFail) reaches the holder
through fastthaw before the command line machinery is even imported: writers may be
waiting for it. `quiesce thaw` does the same when its command line is one the fast path
reads with certainty; anything else leaves the release to the normal path.
"""

import sys

_RELEASING_ACTIONS = ("thaw", "freezefail")
# What may come before and after `thaw` for the fast path to act: the options it reads
# itself. Any other word could change what the command is, so it then sends nothing.
_FAST_VALUE_OPTIONS = ("-c", "--config", "--runtime-dir", "--caller")
_FAST_FLAGS = ("--all",)


def _run(argv):
    answer = None
    if len(argv) > 1 and argv[1].lower() in _RELEASING_ACTIONS:
        from quiesce.commands import fastthaw
        answer = fastthaw.release(argv)
    from quiesce import cli
    return cli.main(argv, early_thaw=answer)


def is_plain_thaw(args) -> bool:
    """True if args (without the program name) are certainly the thaw command."""
    words = []
    i = 0
    while i < len(args):
        word = args[i]
        if word in _FAST_VALUE_OPTIONS:
            i += 2
            continue
        if word in _FAST_FLAGS or any(word.startswith(o + "=") for o in _FAST_VALUE_OPTIONS if o.startswith("--")):
            i += 1
            continue
        if word.startswith("-"):
            return False
        words.append(word)
        i += 1
    return words == ["thaw"] and i == len(args)


def command_main(argv=None) -> int:
    """quiesce [OPTIONS] COMMAND ...: the installed command."""
    args = list(sys.argv[1:] if argv is None else argv)
    answer = None
    if is_plain_thaw(args):
        from quiesce.commands import fastthaw
        answer = fastthaw.release(args)
    from quiesce import cli
    return cli.main(args, early_thaw=answer)


def hook_main() -> None:
    """<hook> ACTION [EXTRA...], as VMware Tools and qemu-ga call it."""
    sys.exit(_run(["hook"] + sys.argv[1:]))


def freeze_main() -> None:
    """A pre-snapshot script: arguments, if any, are ignored."""
    sys.exit(_run(["hook", "freeze"]))


def thaw_main() -> None:
    """A post-snapshot script: arguments, if any, are ignored."""
    sys.exit(_run(["hook", "thaw"]))
