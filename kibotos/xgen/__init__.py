"""XGen, the data factory: a human demonstration (video or 3D keypoints) becomes
standardized Unitree G1 interaction clips (cargo pickup with a procedural box).

One module per stage, each ``run(inputs, config) -> StageResult`` with its own reason
codes and metrics, callable by a job handler as it is:

    pose (pose.py) -> retarget (retarget.py) -> interaction (interaction.py)
        -> augment (augment.py) -> export (export.py)

``pipeline.py`` runs them all in-process (``kibotos xgen run``); ``synth.py`` makes the
test data (a procedural human cargo pickup as keypoints or video).
"""
