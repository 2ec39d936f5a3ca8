"""Bundle views kept open between the gate stages of one worker (issue 17).

A submission goes through gates A-E as five records on five topics, usually all in the
same worker (every topic is keyed by submission id and has the same partitions). Each
gate stage used to open the bundle again: list and check the zip, read the root
metadata, and re-read the arrays the previous gate had already read and decoded (gate
A reads the video and every float array; gates B-E read them again). The in-process
chain (``kibotos verify``) shares one view across the gates; ``ViewCache`` gives the
stages the same, across records:

* a view is lent to one stage at a time (``borrow`` takes it out of the cache, ``give``
  puts it back), so no two threads ever use one view; a second borrower of the same
  bundle meanwhile opens its own;
* the key is the bundle's content digest (``bundle_sha256`` of the event) with the local
  file's identity (path, size, modification time): another file, or the same path
  rewritten, never meets an old view;
* bounded: at most ``max_views`` views and ``max_bytes`` of arrays they decoded (the
  least recently given back are closed first); a view that decoded more than
  ``max_bytes`` on its own is closed at once;
* only a view whose gate passed is kept, and not after the last gate: a failed gate ends
  the submission's chain, and a gate that hit a resource limit or an error may have left
  its view half-read;
* the resource budgets are the chain's: a view's ``max_total_decoded_bytes`` counts what
  every gate it served decoded (an array is decoded once), each gate still has its own
  time budget (``processors.base.run_gate``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from kibotos.bundle import open_bundle
from kibotos.bundle.limits import Limits
from kibotos.bundle.reader import BundleView

# a few submissions between two of their gates at once; the decoded arrays of a small
# episode are a few MB, of a 10-minute one a few hundred
DEFAULT_MAX_VIEWS = 4
DEFAULT_MAX_BYTES = 256 << 20

ViewKey = tuple[str, str, int, int]


def view_key(path: Path, digest: str | None) -> ViewKey | None:
    """What identifies the bundle at ``path`` (None: it cannot be stat'ed; open it plainly)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), digest or "", st.st_size, st.st_mtime_ns)


class ViewCache:
    """Open bundle views by content, lent to one stage at a time (module docstring)."""

    def __init__(self, max_views: int = DEFAULT_MAX_VIEWS, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_views = max_views
        self.max_bytes = max_bytes
        self._views: OrderedDict[ViewKey, BundleView] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def borrow(self, path: Path, digest: str | None, limits: Limits) -> tuple[BundleView, ViewKey | None]:
        """A view of ``path``: the cached one (taken out of the cache) or a new one.
        Raises ``BundleError`` as ``open_bundle`` does."""
        key = view_key(path, digest)
        if key is not None:
            with self._lock:
                view = self._views.pop(key, None)
            if view is not None and view.limits == limits:
                self.hits += 1
                return view, key
            if view is not None:  # opened under other limits: not this caller's budget
                view.close()
        self.misses += 1
        return open_bundle(path, limits), key

    def give(self, view: BundleView, key: ViewKey | None, keep: bool) -> None:
        """Return a borrowed view: kept for the next gate when ``keep`` (and it fits),
        else closed."""
        if not keep or key is None or self.max_views <= 0 or view.decoded_bytes > self.max_bytes:
            view.close()
            return
        evicted: list[BundleView] = []
        with self._lock:
            old = self._views.pop(key, None)
            if old is not None:  # another borrower opened the same bundle meanwhile
                evicted.append(old)
            self._views[key] = view
            while len(self._views) > self.max_views or self._bytes() > self.max_bytes:
                evicted.append(self._views.popitem(last=False)[1])
        for gone in evicted:
            gone.close()

    def _bytes(self) -> int:
        return sum(v.decoded_bytes for v in self._views.values())

    def __len__(self) -> int:
        return len(self._views)

    def close(self) -> None:
        with self._lock:
            views, self._views = list(self._views.values()), OrderedDict()
        for view in views:
            view.close()
