"""quiesce register AGENT / unregister AGENT: wire quiesce into one snapshot agent, or undo it."""

from __future__ import annotations

import os

from quiesce.agents import catalog, register
from quiesce.base import paths
from quiesce.base.config import Settings
from quiesce.base.errors import ConfigError


def run(settings: Settings) -> int:
    layout = register.Layout(root=settings.root.rstrip("/"), libdir=paths.LIB_DIR)
    undo = settings.command == "unregister"
    if settings.all_agents and undo and not settings.words:
        for line in register.unregister_all(layout):
            print("quiesce: %s" % line)
        return 0
    if len(settings.words) != 1:
        raise ConfigError("%s needs one agent: %s%s" % (settings.command, ", ".join(catalog.REGISTERABLE),
                                                         " (or --all)" if undo else ""))
    agent = catalog.BY_NAME.get(settings.words[0])
    if agent is None or not agent.registerable:
        raise ConfigError("unknown agent %r: expected one of %s" % (settings.words[0], ", ".join(catalog.REGISTERABLE)))
    if os.geteuid() != 0:
        raise ConfigError("%s must run as root: the agents demand root-owned files" % settings.command)
    for line in (register.unregister(agent, layout) if undo else register.register(agent, layout, settings)):
        print("quiesce: %s: %s" % (agent.name, line))
    return 0
