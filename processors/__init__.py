"""Stream processors: one module per gate/stage, each a pure ``check`` function.

The stream adapters in ``streams/`` only move records between topics; ``kibotos verify``
runs exactly the same functions in-process.
"""
