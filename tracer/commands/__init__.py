"""One module per subcommand; each has ``prepare_parser`` and ``run``."""
