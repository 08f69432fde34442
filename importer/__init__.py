"""amili-import: batch file-import of creditor events into Visma Amili's API."""

__version__ = "0.1.0"
