"""The binary heap of ``java.util.PriorityQueue``, operation for operation.

Flink keeps partial and completed matches in priority queues ordered only by the start event,
so matches that started with the same event tie. Which of them is emitted first — and, under a
skip strategy, which one survives — is decided by where the heap happens to hold them, and the
order timeouts come out in is the heap's array order. Python's ``heapq`` sifts differently, so
this module reproduces Java's sift-up / sift-down / bulk-remove exactly. Elements are anything
with an ``order`` attribute (an int; smaller first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def offer(heap: list[Any], item: Any) -> None:
    """``PriorityQueue.offer``: append and sift up."""
    k = len(heap)
    heap.append(item)
    order = item.order
    while k > 0:
        parent = (k - 1) >> 1
        above = heap[parent]
        if order >= above.order:
            break
        heap[k] = above
        k = parent
    heap[k] = item


def poll(heap: list[Any]) -> Any:
    """``PriorityQueue.poll``: remove the head, move the last element to the top, sift down."""
    head = heap[0]
    last = heap.pop()
    if heap:
        _sift_down(heap, 0, last, len(heap))
    return head


def _sift_down(heap: list[Any], k: int, item: Any, n: int) -> None:
    half = n >> 1
    order = item.order
    while k < half:
        child = 2 * k + 1
        c = heap[child]
        right = child + 1
        if right < n and c.order > heap[right].order:
            child = right
            c = heap[child]
        if order <= c.order:
            break
        heap[k] = c
        k = child
    heap[k] = item


def remove_if(heap: list[Any], doomed: Callable[[Any], bool]) -> bool:
    """``PriorityQueue.removeIf`` / ``removeAll``: compact in array order, then heapify."""
    keep = [item for item in heap if not doomed(item)]
    if len(keep) == len(heap):
        return False
    heap[:] = keep
    n = len(heap)
    for i in range((n >> 1) - 1, -1, -1):
        _sift_down(heap, i, heap[i], n)
    return True
