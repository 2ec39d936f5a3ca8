"""Scoring and rewards (design §7): soft components from evidence results, the final
score, the reward curve and the reward, under a versioned config.

>>> from kibotos.scoring import curve, load_scoring_config
>>> round(curve(0.55, load_scoring_config()), 6)
0.5
"""

from kibotos.scoring.components import (
           Component,
           compute_components,
           s_align,
           s_novel,
           s_object,
           s_pose,
           s_retarget,
           s_task,
)
from kibotos.scoring.config import COMPONENTS, ScoringConfig, load_scoring_config, parse_scoring_config
from kibotos.scoring.reward import (
           ScoreBreakdown,
           ScoringError,
           angle_multiplier,
           copy_factor,
           copy_match_of,
           curve,
           final_score,
           reward,
           score_submission,
)

__all__ = ["COMPONENTS", "Component", "ScoreBreakdown", "ScoringConfig", "ScoringError", "angle_multiplier",
           "compute_components", "copy_factor", "copy_match_of", "curve", "final_score", "load_scoring_config", "parse_scoring_config", "reward",
           "s_align", "s_novel", "s_object", "s_pose", "s_retarget", "s_task", "score_submission"]
