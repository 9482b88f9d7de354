"""cutstream: the command line and the settings; the composition root that wires the parts."""

__version__ = "0.1.0"
