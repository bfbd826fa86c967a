"""Measurements of the course against its targets and its peers: ``python -m bench [--mode fast]``."""
