"""hostmon agent: runtime, config, CLI, exposition and shipping."""

__version__ = "0.1.0"
