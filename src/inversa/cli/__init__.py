"""The command line and the local web page: each subcommand's parser and run (entry point :func:`inversa.cli.main.main`)."""
