"""Kibotos: verify, score and reward crowd-sourced robot demonstrations."""

__version__ = "0.1.0"
