"""Cargo pickup phases (the clip's ``phase`` array holds their indices)."""

PHASES = ("approach", "grasp", "lift", "carry", "place", "release")
PHASE_ID = {name: i for i, name in enumerate(PHASES)}
