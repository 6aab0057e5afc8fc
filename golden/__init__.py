"""Installed as ``oracle_golden``: the built-in tiny checkpoint (tiny/) and its golden tensors."""
