"""Progress bars inside ``pyinverse run``'s stages, under the run's bar over the stages (stderr,
rank 0 only). Off unless the run turns them on (:func:`shown`), so that the studies stay quiet when
called as functions or from the tests."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

from .. import distributed as dist

_shown = False
Item = TypeVar("Item")


@contextmanager
def shown(on: bool) -> Iterator[None]:
    """Show the stages' bars (``on``) inside the ``with`` block."""
    global _shown
    before, _shown = _shown, bool(on)
    try:
        yield
    finally:
        _shown = before


def active() -> bool:
    """Whether this process shows the stages' bars now."""
    return _shown and dist.is_main()


def bar(total: int, desc: str, unit: str = "step") -> tqdm:
    """A bar of ``total`` steps (call ``update()``; use as a context manager), shown if :func:`active`."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=not active())


def steps(items: Iterable[Item], desc: str) -> Iterable[Item]:
    """``items``, with a bar over them if :func:`active`."""
    items = list(items)
    return tqdm(items, desc=desc, leave=False, disable=not active())
