"""Detection's pure decisions, one module per stage of a policy's pass.

``reconcile.detection`` runs a pass as observe → assess → plan → act → record;
everything in it that decides rather than reads or writes lives here:

- ``workload``: what detection reads of a workload body (identity, containers,
  its ``imagepatch.dev/*`` requests and whether they can be used);
- ``lineage``: which base a container follows, and which events reach a workload;
- ``assess``: each container judged, gathered per workload (``Observation``);
- ``plan``: the ImagePatch intents of a pass, and the patch bodies and targets
  they become; how the act stage's outcomes change the known patches;
- ``report``: each workload's reported state, and the policy status, computed
  from the observations and the act stage's outcomes.
"""
