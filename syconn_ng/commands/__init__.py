"""The `syconn-ng` subcommands, one module each (registered in `syconn_ng.cli.COMMANDS`)."""
