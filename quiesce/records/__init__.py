"""What quiesce writes down: runtime state, the outcome history, metrics, changed server settings.
"""
