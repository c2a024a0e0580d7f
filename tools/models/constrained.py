"""Schema-constrained decoding that leaves room for MedGemma's thinking block.

xgrammar's ready-made transformers processor assumes every generated token belongs to the grammar.
With thinking on, MedGemma may first write ``<unused94>thought ... <unused95>`` and only then the
JSON; so this processor lets the first token be the thinking marker, leaves the thinking free
(bounded), and applies the JSON grammar from the token after the closing marker. Without thinking
it is the plain grammar. It reads positions from the full `input_ids`, so it works the same when
the prompt prefix came from a reused KV cache.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MAX_THINKING_TOKENS = 1024


class JsonAfterThinking:
    """A transformers logits processor (batch of one): optional free thinking, then the JSON grammar."""

    def __init__(
        self,
        compiled_grammar: Any,
        prompt_length: int,
        *,
        think_start: int | None = None,
        think_end: int | None = None,
        max_thinking_tokens: int = DEFAULT_MAX_THINKING_TOKENS,
    ) -> None:
        import xgrammar as xgr

        self._matcher = xgr.GrammarMatcher(compiled_grammar)
        self._bitmask = xgr.allocate_token_bitmask(1, compiled_grammar.tokenizer_info.vocab_size)
        self._prompt_length = prompt_length
        self._think_start = think_start
        self._think_end = think_end
        self._max_thinking = max_thinking_tokens
        self._accepted = 0
        self.thinking_tokens = 0

    def _json_start(self, generated: list[int]) -> int | None:
        """Index in `generated` where the JSON begins, or None while the thinking block is open."""
        if self._think_start is None or not generated or generated[0] != self._think_start:
            return 0
        if self._think_end is not None and self._think_end in generated:
            return generated.index(self._think_end) + 1
        return None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch
        import xgrammar as xgr

        if input_ids.shape[0] != 1:
            raise ValueError("JsonAfterThinking handles one sequence at a time")
        generated = input_ids[0, self._prompt_length :].tolist()
        start = self._json_start(generated)
        if start is None:  # inside the thinking block: free text, closed by force at the cap
            self.thinking_tokens = len(generated)
            if len(generated) >= self._max_thinking and self._think_end is not None:
                forced = torch.full_like(scores, float("-inf"))
                forced[:, self._think_end] = 0.0
                return forced
            return scores
        for token in generated[start + self._accepted :]:
            if not self._matcher.accept_token(token):
                raise RuntimeError(f"token {token} violates the JSON grammar")
            self._accepted += 1
        if self._matcher.is_terminated():
            return scores
        may_think = self._think_start is not None and not generated
        kept = scores[:, self._think_start].clone() if may_think else None
        self._matcher.fill_next_token_bitmask(self._bitmask, 0)
        xgr.apply_token_bitmask_inplace(scores, self._bitmask.to(scores.device))
        if kept is not None:
            scores[:, self._think_start] = kept
        return scores
