"""The sdactivate version: one home, importable without the package's lazy root (no cycle)."""

__version__ = "0.1.0"
