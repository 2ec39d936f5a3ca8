"""Configuration: process settings (``settings``), the versioned YAML files beside this
module (gates, scoring, novelty, alignment, xgen, xmimic, datasets, faults) and the one
way every loader reads and validates them (``files.load_config``)."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
