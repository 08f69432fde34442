"""``python -m importer`` is the same as ``amili-import``."""

from importer.cli import entry

entry()
