"""Studies on the bundled data: the pieces of `pyinverse run`."""
