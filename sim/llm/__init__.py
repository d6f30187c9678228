"""Token-level LLM serving: a vLLM-style iteration-level scheduler per replica, a paged KV cache, and
iteration-time models, behind the request-level engine's contract (docs/llm.md).

Reading order: ``scheduler.py`` (one replica's batches, iteration by iteration), ``engine.py`` (replicas on
SimPy, the contract ``sim.scaling`` drives), ``step_time.py`` (how long an iteration takes), ``memory.py``
and ``kv_cache.py`` (what fits a GPU), ``build.py`` (a scenario's parts), ``run.py``, ``metrics.py`` and
``capacity.py`` (tables, summary, the capacity estimate). ``sim.runner.run_once`` hands a scenario with an
``llm`` section to ``run.run_llm_once``.
"""
