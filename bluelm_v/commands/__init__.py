"""One module per ``bluelm-v`` subcommand (see bluelm_v/cli.py)."""
