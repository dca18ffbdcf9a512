"""The device side of paper methods, one module (or package) each: its inference mode, policy, bench rows
and report targets, registered in the shared registries; found by :func:`edge_runtime.plugins.load_methods`.
Like everything under ``edge_runtime``, numpy + one backend only at import time."""
