"""The `p2pvoix` command line: parse, build a config, call one function, map errors to exit codes."""
