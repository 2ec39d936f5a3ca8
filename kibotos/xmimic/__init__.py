"""XMimic: teacher-student G1 policies that reproduce XGen's cargo-pickup clips in
simulation (README "XMimic"). Modules: ``config`` (versioned YAML), ``clips`` (clip.npz
loading, held-out variants), ``sim`` (simulator interface, MuJoCo and Genesis backends),
``env`` (batched environment, DI/IT/DR), ``reward`` (unified imitation reward),
``train`` (rsl-rl PPO teacher, PPO+BC students), ``evaluate`` (SR/GSR), ``registry``
(checkpoints and the local policy registry)."""
