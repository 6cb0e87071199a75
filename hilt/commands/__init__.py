"""The ``hilt`` subcommands that read logs: ``stats``, ``verify``, ``tail`` (one small module each)."""
