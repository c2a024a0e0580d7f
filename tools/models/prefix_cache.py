"""Keeping the KV cache of a conversation's stable prefix between turns.

An intake asks up to 20 questions; each prompt is the previous one plus the last answer and the
next topic. Without reuse every turn re-encodes the whole conversation. Here, after a generation
the model's cache is kept together with the exact token ids it holds; the next request that
starts with (some of) the same tokens takes that cache, cuts it back to the common prefix and
only the new tokens are encoded.

Entries are keyed by their token sequence itself, so different sessions never share a cache by
accident and a changed prefix (another chart, another session) simply finds no match. An entry is
*moved* out while it is used (no copy of the tensors) and the grown cache is put back under the
new tokens; the LRU keeps a few entries and a total token budget, which bounds memory. Callers
serialise access (the backend's generation lock).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_ENTRIES = 4
DEFAULT_MAX_TOKENS = 32_768


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    limit = min(len(a), len(b))
    for index in range(limit):
        if a[index] != b[index]:
            return index
    return limit


@dataclass
class Reuse:
    """A cache cut back to `reused_tokens` tokens, ready to extend (or none: `cache` is None)."""

    cache: Any
    reused_tokens: int


class PrefixCache:
    """An LRU of (token ids, KV cache) pairs; see the module docstring."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self._entries: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._max_entries = max_entries
        self._max_tokens = max_tokens
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def cached_tokens(self) -> int:
        return sum(len(key) for key in self._entries)

    def take(self, tokens: Sequence[int], *, min_reuse: int = 1) -> Reuse:
        """The entry sharing the longest prefix with `tokens`, cropped to it, removed from the LRU.

        At least one token of `tokens` is always left to encode (the model needs logits for it).
        """
        best_key: tuple[int, ...] | None = None
        best = 0
        for key in self._entries:
            shared = common_prefix_length(key, tokens)
            if shared > best:
                best_key, best = key, shared
        best = min(best, len(tokens) - 1)
        if best_key is None or best < min_reuse:
            self.misses += 1
            return Reuse(cache=None, reused_tokens=0)
        cache = self._entries.pop(best_key)
        cached = int(cache.get_seq_length())
        if cached < best:  # the key promised more than the cache holds: never trust it
            self.misses += 1
            return Reuse(cache=None, reused_tokens=0)
        try:
            cache.crop(-(cached - best))
        except (RuntimeError, ValueError):  # a layer that cannot roll back: encode from scratch
            self.misses += 1
            return Reuse(cache=None, reused_tokens=0)
        self.hits += 1
        self.reused_tokens += best
        return Reuse(cache=cache, reused_tokens=best)

    def put(self, tokens: Sequence[int], cache: Any) -> None:
        """Keep `cache`, which holds exactly the first ``cache.get_seq_length()`` of `tokens`."""
        held = int(cache.get_seq_length())
        if held <= 0 or held > len(tokens) or held > self._max_tokens:
            return
        key = tuple(tokens[:held])
        self._entries[key] = cache
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries or self.cached_tokens > self._max_tokens:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
