"""Pipeline schedules as pure tables of (clock, stage, op, microbatch) actions; no torch.

GPipe with m=3 micro-batches over n=3 stages (rows are clocks, `jFi` = stage j, op, micro-batch i):

    clock  stage0  stage1  stage2
      0     0F0
      1     0F1     1F0
      2     0F2     1F1     2F0
      3             1F2     2F1
      4                     2F2
      5                     2B0
      6             1B0     2B1
      7     0B0     1B1     2B2
      8     0B1     1B2
      9     0B2

A stage runs one action per clock; F(j, i) waits for F(j-1, i), B(j, i) for B(j+1, i) and F(j, i).
`sequential` runs one action per clock in total: the single-device baseline without a pipeline.
"""

from __future__ import annotations

from collections.abc import Callable

from slimpipe.timeline import BACKWARD, FORWARD, Action

__all__ = ["BACKWARD", "FORWARD", "Action", "ScheduleError", "get_schedule"]


class ScheduleError(ValueError):
    pass


def _check(n_stages: int, n_microbatches: int) -> None:
    if n_stages < 1 or n_microbatches < 1:
        raise ScheduleError(f"need at least one stage and one micro-batch, got {n_stages} and {n_microbatches}")


def gpipe_order(n_stages: int, n_microbatches: int) -> list[list[tuple[str, int]]]:
    """Per stage: all forwards (fill), then all backwards (drain)."""
    m = n_microbatches
    return [[(FORWARD, i) for i in range(m)] + [(BACKWARD, i) for i in range(m)] for _ in range(n_stages)]


def one_f_one_b_order(n_stages: int, n_microbatches: int) -> list[list[tuple[str, int]]]:
    """Per stage: n-1-j warm-up forwards, then alternate one forward / one backward, then cool down."""
    m = n_microbatches
    orders = []
    for j in range(n_stages):
        warmup = min(n_stages - 1 - j, m)
        order = [(FORWARD, i) for i in range(warmup)]
        for i in range(m - warmup):
            order += [(FORWARD, warmup + i), (BACKWARD, i)]
        order += [(BACKWARD, i) for i in range(m - warmup, m)]
        orders.append(order)
    return orders


def clock_actions(orders: list[list[tuple[str, int]]]) -> list[Action]:
    """Give every action the earliest clock its stage order and its data dependencies allow."""
    n = len(orders)
    done: dict[tuple[int, str, int], int] = {}  # (stage, op, mb) -> clock
    position = [0] * n
    free_at = [0] * n
    actions: list[Action] = []
    total = sum(len(o) for o in orders)
    while len(actions) < total:
        progressed = False
        for j in range(n):
            if position[j] == len(orders[j]):
                continue
            op, i = orders[j][position[j]]
            deps = [(j - 1, FORWARD, i)] if op == FORWARD and j > 0 else []
            if op == BACKWARD:
                deps = [(j, FORWARD, i)] + ([(j + 1, BACKWARD, i)] if j < n - 1 else [])
            if any(d not in done for d in deps):
                continue
            clock = max([free_at[j]] + [done[d] + 1 for d in deps])
            done[(j, op, i)] = clock
            actions.append(Action(clock, j, op, i))
            free_at[j] = clock + 1
            position[j] += 1
            progressed = True
        if not progressed:
            raise ScheduleError("schedule deadlocks: some stage waits on an action that never runs")
    return sorted(actions)


def sequential(n_stages: int, n_microbatches: int) -> list[Action]:
    """One device: each micro-batch forward through every stage, then backward, one action per clock."""
    _check(n_stages, n_microbatches)
    actions = []
    for i in range(n_microbatches):
        for j in range(n_stages):
            actions.append((j, FORWARD, i))
        for j in reversed(range(n_stages)):
            actions.append((j, BACKWARD, i))
    return [Action(clock, j, op, i) for clock, (j, op, i) in enumerate(actions)]


def gpipe(n_stages: int, n_microbatches: int) -> list[Action]:
    _check(n_stages, n_microbatches)
    return clock_actions(gpipe_order(n_stages, n_microbatches))


def one_f_one_b(n_stages: int, n_microbatches: int) -> list[Action]:
    _check(n_stages, n_microbatches)
    return clock_actions(one_f_one_b_order(n_stages, n_microbatches))


SCHEDULES: dict[str, Callable[[int, int], list[Action]]] = {
    "sequential": sequential,
    "gpipe": gpipe,
    "1f1b": one_f_one_b,
}


def get_schedule(name: str) -> Callable[[int, int], list[Action]]:
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ScheduleError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}") from None


def render(actions: list[Action]) -> str:
    """The table drawn in this module's docstring: one row per clock, one column per stage."""
    n = max(a.stage for a in actions) + 1
    rows: dict[int, list[str]] = {}
    for a in actions:
        rows.setdefault(a.clock, [""] * n)[a.stage] = str(a)
    return "\n".join(" ".join(f"{c:4}" for c in rows[k]).rstrip() for k in sorted(rows))
