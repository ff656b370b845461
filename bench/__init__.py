"""Demo and benchmark programs for quiesce (run as scripts, see bench/demo.py and bench/lock_window.py)."""
