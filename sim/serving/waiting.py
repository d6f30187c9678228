"""How a server waits for work, and which idle response the simulator applies for it.

A batch that starts after its replica sat idle can run slower than one right behind another: a thread
that blocked meets a core that went idle (cold caches, a lower clock, a wake-up); a thread that polled
never left its core. How much slower is measured, never assumed, and it depends on how the server
waited, so the waiting behaviour is a named property of the server that was measured and of the one
that is simulated:

* ``block``: an idle server blocks (on a condition variable, a queue, a sleep) until work comes: the
  waiting of ``capsim bench-serve --wait block`` and of every profile that does not say otherwise
  (``capsim calibrate`` always slept through its replay's idle gaps before ``--wait``);
* ``poll``: a busy loop that keeps checking the queue and never blocks (``--wait poll``).

A profile records the behaviour its idle response was measured under in ``server.wait``
(docs/profile.md). A scenario's ``service.server_wait`` names the behaviour it models
(docs/scenario.md): ``profile`` (the default) takes the profile's; ``block`` or ``poll`` state it and
must match the profile's measurement; ``none`` applies no idle response (back-to-back times, as
``service.idle_effects: false``).
"""

from __future__ import annotations

from sim.errors import ProfileError

WAITS = ("block", "poll")
UNRECORDED_WAIT = "block"  # a profile without server.wait was measured by a server that sleeps or blocks
SCENARIO_WAITS = ("profile", *WAITS, "none")


def recorded_wait(doc: dict | None) -> str:
    """The waiting behaviour a profile's idle response was measured under, or a bench-serve run's server
    waited with: both documents keep it in ``server.wait``."""
    return ((doc or {}).get("server") or {}).get("wait") or UNRECORDED_WAIT


def modelled_wait(server_wait: str, idle_effects: bool, recorded: str, profile: str = "the profile") -> str | None:
    """The waiting behaviour whose idle response the simulator applies (None: none, back-to-back times).

    ``server_wait`` is the scenario's choice, ``recorded`` the profile's (:func:`recorded_wait`); a
    stated behaviour the profile did not measure is a :class:`~sim.errors.ProfileError` naming ``profile``."""
    if server_wait == "none" or not idle_effects:
        return None
    if server_wait in ("profile", recorded):
        return recorded
    raise ProfileError(f"service.server_wait = {server_wait!r}: {profile} measured its idle response under server "
                       f"wait {recorded!r} (its server.wait), not {server_wait!r}; calibrate it with `capsim calibrate "
                       f"--wait {server_wait}` (or build it from `capsim bench-serve --wait {server_wait}` runs), or "
                       "set service.server_wait to 'profile' (the profile's own) or 'none' (back-to-back times)")
