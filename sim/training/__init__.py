"""Training capacity: does a model fit, how long a step takes, how long and how much the job costs.

Reading guide (docs/training.md says the same in more words):

| module | concept |
| --- | --- |
| ``scenario.py`` | the plan file (``kind: training``): model, data, batch, cluster, parallel, compute, network, reliability |
| ``models.py`` | a model as training sees it: parameters, layers, FLOPs, activations (Korthikanti et al.) |
| ``states.py`` | bytes per parameter of weights, gradients and optimiser states (the 16 bytes of mixed-precision Adam) |
| ``layout.py`` | a parallel layout (data × tensor × pipeline, ZeRO stage) and where its ranks sit on nodes |
| ``memory.py`` | memory per GPU under that layout, the fit, and what would fit instead |
| ``fabric.py`` | the links a collective runs on: the GPU catalog's NVLink and node network, or a measured all-reduce |
| ``step.py`` | one optimiser step: compute, tensor-parallel all-reduces, pipeline bubble, gradient sync, optimiser |
| ``job.py`` | the whole job: steps, time, GPU-hours, cost, failures and checkpoints, stragglers |
| ``failures.py`` | the job with seeded failures, to hold the closed form to |
| ``planner.py`` | scaling over GPU counts, and the cheapest configuration meeting a deadline |
| ``report.py`` | terminal tables and the files of ``capsim train-plan --out`` |

Closed forms live in ``sim/theory/`` (``collectives.py``: ring and hierarchical all-reduce, bucket overlap,
the alpha-beta fit; ``pipeline.py``: the bubble and the 1F1B schedule; ``reliability.py``: Young/Daly,
expected time under failures, stragglers); measured steps and all-reduces in ``sim/profiles/training.py``.
"""
