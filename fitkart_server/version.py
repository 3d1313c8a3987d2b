"""The version of FitKart Sync (the package, /readyz and the status page show it)."""

__version__ = "0.1.0"
