"""Keeping the KV cache of a conversation's stable prefix between turns.

An intake asks up to 20 questions; each prompt is the previous one plus the last answer and the
next topic. Without reuse every turn re-encodes the whole conversation. Here, after a generation
the model's cache is kept together with the exact token ids it holds; the next request that
starts with (some of) the same tokens gets a view of that cache cut back to the common prefix,
and only the new tokens are encoded.

Entries are keyed by their token sequence itself, so different sessions never share a cache by
accident and a changed prefix (another chart, another session) simply finds no match beyond what
really is shared (the system instructions). A view shares the entry's tensors without copying
them; appending to it makes new tensors, so the entry stays valid for other sessions. When a
request continues an entry (most of it reused: the same session's next turn), the grown cache
replaces it. The LRU keeps a few entries and a total token budget, which bounds memory. Callers
serialise access (the backend's generation lock).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_ENTRIES = 4
DEFAULT_MAX_TOKENS = 32_768
CONTINUATION_SHARE = 0.5  # reusing at least this share of an entry means the same conversation went on

Crop = Callable[[Any, int], Any]


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
    source: tuple[int, ...] | None = None


def view_crop(cache: Any, keep: int) -> Any:
    """A transformers `DynamicCache` holding the first `keep` positions of `cache`, sharing its tensors.

    Only full-attention `DynamicLayer`s can be cut this way (the backend builds its caches without a
    config, so every layer is one; the attention mask applies any sliding window). Raises
    `ValueError` for any other layer type.
    """
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    view = copy.copy(cache)
    layers = []
    for layer in cache.layers:
        if not isinstance(layer, DynamicLayer) or isinstance(layer, DynamicSlidingWindowLayer):
            raise ValueError(f"cannot cut a {type(layer).__name__} back to a prefix")
        full: Any = layer
        cut = copy.copy(full)
        if getattr(full, "is_initialized", False):
            cut.keys = full.keys[..., :keep, :]
            cut.values = full.values[..., :keep, :]
        layers.append(cut)
    view.layers = layers
    return view


class PrefixCache:
    """An LRU of (token ids, KV cache) pairs; see the module docstring."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        *,
        crop: Crop = view_crop,
    ) -> None:
        self._entries: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._max_entries = max_entries
        self._max_tokens = max_tokens
        self._crop = crop
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def cached_tokens(self) -> int:
        return sum(len(key) for key in self._entries)

    def take(self, tokens: Sequence[int], *, min_reuse: int = 1) -> Reuse:
        """A view of the entry sharing the longest prefix with `tokens`, cut back to that prefix.

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
        entry = self._entries[best_key]
        if int(entry.get_seq_length()) < best:  # the key promised more than the cache holds
            del self._entries[best_key]
            self.misses += 1
            return Reuse(cache=None, reused_tokens=0)
        try:
            view = self._crop(entry, best)
        except (RuntimeError, ValueError):  # a layer that cannot roll back: encode from scratch
            self.misses += 1
            return Reuse(cache=None, reused_tokens=0)
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.reused_tokens += best
        return Reuse(cache=view, reused_tokens=best, source=best_key)

    def put(self, tokens: Sequence[int], cache: Any, *, continued: Reuse | None = None) -> None:
        """Keep `cache`, which holds exactly the first ``cache.get_seq_length()`` of `tokens`.

        `continued` is what `take` gave for this generation: when most of that entry was reused,
        this cache continues it, and it is replaced.
        """
        held = int(cache.get_seq_length())
        if continued is not None and continued.source is not None:
            source = continued.source
            if continued.reused_tokens >= CONTINUATION_SHARE * len(source):
                self._entries.pop(source, None)
        if held <= 0 or held > len(tokens) or held > self._max_tokens:
            return
        key = tuple(tokens[:held])
        self._entries[key] = cache
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries or self.cached_tokens > self._max_tokens:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
