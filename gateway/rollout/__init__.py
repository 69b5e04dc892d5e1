"""Gated rollouts: a split route moves step by step to a target backend while gates hold.

``plan`` is the ``rollout`` route key's schema, ``measure`` the per-step
figures, ``store`` where the one state of a deployment lives (Redis or a file),
``engine`` the decisions (pure functions of state, plan and figures), and
``manager`` the per-worker loop that flushes figures, follows the state and
decides under a lease. See docs/rollouts.md.
"""

from gateway.rollout.plan import RolloutPlan

__all__ = ["RolloutPlan"]
