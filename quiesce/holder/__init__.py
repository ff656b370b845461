"""The detached process that holds the locks, what it watches, and how others talk to it.
"""
