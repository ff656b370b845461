"""One module per command of the quiesce command line.
"""
