"""MySQL option files (defaults-file), read the way MySQL's and MariaDB's clients read them.

The rules are those of the clients' option-file reader (mysys/my_default.c), which
`my_print_defaults` shows:

- lines starting with "#" or ";" are comments; "[group]" starts a group (names match
  case-insensitively); an option before any group is an error;
- in an option line, "#" outside quotes starts a comment, so `password = pw  # old`
  gives "pw" while `password = "a#b"` gives "a#b";
- the value is trimmed, one pair of matching quotes around it is removed, and the
  escapes \\n \\t \\r \\b \\s (space) \\" \\' \\\\ are decoded (a backslash before
  anything else stays as it is);
- `!include FILE` and `!includedir DIR` (its *.cnf files in name order) are followed.

Where the clients are lenient quiesce is strict, because it runs unattended: a missing
included file, an unknown "!" directive and nesting deeper than MAX_DEPTH are errors,
and every file read must pass the owner and mode checks of safefile.
"""

from __future__ import annotations

import collections
import os

from quiesce.base import safefile
from quiesce.base.errors import ConfigError

MAX_DEPTH = 10
_SPACE = " \t\n\r\v\f"
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "s": " ", '"': '"', "'": "'", "\\": "\\"}
WHAT = "defaults-file"


class Option(collections.namedtuple("Option", "group name value path line shared")):
    """One option line: value is None for a bare name; shared: its file is readable by others."""

    __slots__ = ()


def _cut_comment(text: str) -> str:
    quote = ""
    escape = False
    for i, char in enumerate(text):
        if char in "'\"" and not escape:
            if not quote:
                quote = char
            elif quote == char:
                quote = ""
        if not quote and char == "#":
            return text[:i]
        escape = bool(quote) and char == "\\" and not escape
    return text


def _unescape(value: str) -> str:
    out = []
    i = 0
    last = len(value) - 1
    while i <= last:
        char = value[i]
        if char == "\\" and i != last:
            i += 1
            out.append(_ESCAPES.get(value[i], "\\" + value[i]))
        else:
            out.append(char)
        i += 1
    return "".join(out)


def parse_option(text: str) -> tuple[str, str | None]:
    """(name, value) of one option line without its leading blanks."""
    text = _cut_comment(text)
    name, equals, value = text.partition("=")
    name = name.rstrip(_SPACE)
    if not equals:
        return name, None
    value = value.strip(_SPACE)
    if len(value) > 1 and value[0] in "'\"" and value[0] == value[-1]:
        value = value[1:-1]
    return name, _unescape(value)


def _directive(text: str, where: str) -> tuple[str, str]:
    for keyword in ("includedir", "include"):
        if text.startswith(keyword) and text[len(keyword):len(keyword) + 1] in tuple(_SPACE):
            argument = text[len(keyword):].strip(_SPACE)
            if argument:
                return keyword, argument
            break
    raise ConfigError("%s: unknown directive; use !include FILE or !includedir DIR" % where)


def _included_dir(directory: str, where: str) -> list[str]:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError("%s: cannot read directory %s: %s" % (where, directory, exc.strerror))
    try:
        safefile.check_owner_and_mode(os.fstat(fd), directory, "included directory")
        names = os.listdir(fd)
    finally:
        os.close(fd)
    # The clients take every name ending in .cnf, in byte order.
    return [os.path.join(directory, name) for name in sorted(names, key=os.fsencode)
            if "." in name and name[name.rindex("."):] == ".cnf"]


def _read(path: str, groups: tuple[str, ...], depth: int, found: list[Option]) -> None:
    try:
        file = safefile.read_trusted(path, WHAT)
    except FileNotFoundError:
        raise ConfigError("%s %s does not exist; fix: correct the path" % (WHAT, path))
    group = None
    for number, line in enumerate(file.text.split("\n"), 1):
        text = line.lstrip(_SPACE)
        if not text or text[0] in "#;":
            continue
        where = "%s %s line %d" % (WHAT, path, number)
        if text[0] == "!":
            keyword, argument = _directive(text[1:].lstrip(_SPACE), where)
            if depth >= MAX_DEPTH:
                raise ConfigError("%s: includes nested deeper than %d" % (where, MAX_DEPTH))
            if not os.path.isabs(argument):
                raise ConfigError("%s: !%s needs an absolute path" % (where, keyword))
            targets = _included_dir(argument, where) if keyword == "includedir" else [argument]
            for target in targets:
                _read(target, groups, depth + 1, found)
            continue
        if text[0] == "[":
            end = text.find("]")
            if end < 0:
                raise ConfigError("%s: group name without a closing ]" % where)
            group = text[1:end].rstrip(_SPACE).lower()
            continue
        if group is None:
            raise ConfigError("%s: option before the first [group]" % where)
        if group in groups:
            name, value = parse_option(text)
            if not name:
                raise ConfigError("%s: option without a name" % where)
            found.append(Option(group, name, value, path, number, file.shared))


def read_options(path: str, groups: tuple[str, ...]) -> list[Option]:
    """Every option of the given groups in the order the clients see them."""
    found: list[Option] = []
    _read(path, tuple(g.lower() for g in groups), 0, found)
    return found


CREDENTIAL_KEYS = ("user", "password", "socket", "host", "port")


def read_credentials(path: str) -> dict[str, str]:
    """user, password, socket, host and port: [client], then [quiesce] overriding it.

    Other options belong to other clients and are left alone. A file that gives a
    password must be readable by its owner only.
    """
    values: dict[str, str] = {}
    options = read_options(path, ("client", "quiesce"))
    # [quiesce] overrides [client] wherever each group appears in the file.
    for option in sorted(options, key=lambda o: o.group != "client"):
        name = option.name.replace("_", "-")
        if name.startswith("loose-"):
            name = name[len("loose-"):]
        if name not in CREDENTIAL_KEYS:
            continue
        where = "%s %s line %d" % (WHAT, option.path, option.line)
        if option.value is None:
            raise ConfigError("%s: %s without a value (clients would prompt for it; quiesce "
                              "cannot); fix: write %s = VALUE" % (where, name, name))
        if name == "password":
            safefile.refuse_shared_secret(option.path, option.shared, WHAT)
        values[name] = option.value
    return values
