"""`upres bench`: the reference path and the fast path, timed side by side in one run."""
