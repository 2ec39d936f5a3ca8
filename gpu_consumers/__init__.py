"""Ray-backed consumer group for the expensive evidence: pose (gate F), IK residual,
Genesis playback — and, later, VLM, task and training jobs."""
