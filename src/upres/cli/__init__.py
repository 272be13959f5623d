"""The `upres` command line: one module per command, all thin callers of upres.api."""
