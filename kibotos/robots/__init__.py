"""Robot model registry and kinematics.

>>> from kibotos.robots import get_robot
>>> get_robot("franka_panda", "v1").joint_names[:2]
('panda_joint1', 'panda_joint2')
"""

from kibotos.robots.registry import RobotModel, get_robot, list_robots

__all__ = ["RobotModel", "get_robot", "list_robots"]
