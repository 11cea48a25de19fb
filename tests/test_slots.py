"""BuildSlots: slots go by rank among the queued images, whenever each asks."""

from __future__ import annotations

import threading
import time

from imgctl.slots import BuildSlots


def ask(slots: BuildSlots, rank: int, got: list[int]) -> threading.Thread:
    def run() -> None:
        slots.acquire(rank)
        got.append(rank)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def settle() -> None:
    time.sleep(0.05)  # time for a wrongly woken thread to take a slot it must not have


def test_a_free_slot_waits_for_the_best_queued_rank_even_if_it_asks_late() -> None:
    slots, got = BuildSlots(1), []
    for rank in (0, 1, 2):
        slots.queue(rank)
    slots.acquire(0)
    early = ask(slots, 2, got)
    settle()
    slots.release()  # rank 1 is queued but has not asked: the slot waits for it
    settle()
    assert got == []
    ask(slots, 1, got).join(5)
    assert got == [1]
    slots.release()
    early.join(5)
    assert got == [1, 2]


def test_withdrawing_lets_the_next_rank_in() -> None:
    slots, got = BuildSlots(1), []
    slots.queue(0)
    slots.queue(1)
    waiter = ask(slots, 1, got)
    settle()
    assert got == []  # rank 0 is queued ahead of it
    slots.withdraw(0)
    waiter.join(5)
    assert got == [1]
    slots.withdraw(7)  # not queued: nothing happens


def test_several_slots_go_to_the_best_ranks_that_ask() -> None:
    slots, got = BuildSlots(2), []
    for rank in (3, 1, 2, 0):
        slots.queue(rank)
    threads = [ask(slots, rank, got) for rank in (3, 2, 1)]
    settle()
    assert got == [1]  # ranks 0 and 1 hold the two slots' turns; 0 has not asked
    slots.acquire(0)
    slots.release()
    slots.release()
    for thread in threads:
        thread.join(5)
    assert sorted(got[1:]) == [2, 3]
