"""Snapshot agents: where each looks for hooks, wiring quiesce into them, what check says about them.
"""
