"""Dataset exports: LeRobot v3.0 (``kibotos.export.lerobot``) and the HumanX clip format
(``kibotos.export.humanx``), run on a published version by ``kibotos.export.runner``."""
