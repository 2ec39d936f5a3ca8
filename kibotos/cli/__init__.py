"""The ``kibotos`` command line: ``main`` (every subcommand), ``miner`` (the miner's
commands), ``verify`` (one bundle through the gate chain in-process), ``output`` (how
commands print)."""
