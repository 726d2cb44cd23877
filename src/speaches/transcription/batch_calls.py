"""How each CTranslate2 whisper call merges with others: which calls may share a batch, and how one
merged call is built and cut back into each call's results. The queue that uses this is `batching.py`.

Merging never changes a result. CTranslate2 gives a window the same encoder output, tokens and scores
alone or in a batch (checked bit for bit on CPU), provided the batch is one it accepts: the same options,
and prompts whose <|startoftranscript|> sits at the same index with as many task tokens after it. Prompts
may differ in their tokens, so requests for different languages and tasks (and previous text of the
same length) share a batch. Greedy calls that differ only in their length limit merge too: the merged
call runs at the longest limit, and a call whose window reached its own limit there is decoded again
alone, since alone it would have stopped at that limit with another score. Word alignments of texts of
different lengths are computed over padded text, which moved a word boundary by one 20 ms frame in one
case of five measured; texts of equal length align exactly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import ctranslate2

# CTranslate2's own defaults for `Whisper.generate`, so that calls naming different subsets compare equal.
GENERATE_DEFAULTS: dict[str, Any] = {
    "asynchronous": False,
    "beam_size": 5,
    "patience": 1.0,
    "num_hypotheses": 1,
    "length_penalty": 1.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "max_length": 448,
    "return_scores": False,
    "return_logits_vocab": False,
    "return_no_speech_prob": False,
    "max_initial_timestamp_index": 50,
    "suppress_blank": True,
    "suppress_tokens": [-1],
    "sampling_topk": 1,
    "sampling_temperature": 1.0,
}


class Cancellable(Protocol):
    @property
    def cancelled(self) -> bool: ...


@dataclass(eq=False)
class Call:
    """One model call from one job's thread, waiting in (or going through) the queue."""

    kind: CallKind
    key: Hashable | None
    """Calls with equal keys merge; None: this call runs alone, as it was made."""
    windows: int
    args: tuple[Any, ...]
    """What the call was made with; features come first, then their NumPy view (None on a GPU)."""
    options: dict[str, Any]
    job: Hashable = field(default_factory=threading.get_ident)
    """Who made the call: its job's cancel token where it has one (a job's steps may run on different pool
    threads), else its thread."""
    arrived: float = field(default_factory=time.monotonic)
    held_since: float | None = None
    """When it first waited for companions with a replica free: it waits at most `WHISPER__BATCH_WAIT_MS` from
    then in all, however many calls go ahead of it meanwhile."""
    token: Cancellable | None = None
    state: str = "queued"
    """queued, then assigned (a member of a batch) or leading (its thread runs the batch), then done."""
    batch: list[Call] | None = None
    result: Any = None
    error: BaseException | None = None


class CallKind:
    """One of the four CTranslate2 calls; `run` makes one call for all of `calls` (which share a key)."""

    name = ""

    def run(self, model: Any, calls: Sequence[Call]) -> list[Any]:
        raise NotImplementedError


def host_array(features: Any) -> np.ndarray | None:
    """The features as a NumPy array without a copy, or None where they live on a GPU."""
    try:
        array = np.asarray(features)
    except (TypeError, ValueError, RuntimeError):
        return None
    return array if array.ndim == 3 else None


def windows_of(array: np.ndarray | None) -> int:
    return 1 if array is None else int(array.shape[0])


def features_key(name: str, array: np.ndarray | None) -> Hashable | None:
    return None if array is None else (name, array.shape[1:], array.dtype.str)


def _storage(array: np.ndarray) -> ctranslate2.StorageView:
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array))


def _merged_features(calls: Sequence[Call]) -> ctranslate2.StorageView:
    return _storage(np.concatenate([call.args[1] for call in calls]))


def _per_call(results: Any, calls: Sequence[Call]) -> list[Any]:
    """A merged call's results (a sequence or an array, one entry per window) cut into each call's slice."""
    parts, start = [], 0
    for call in calls:
        parts.append(results[start : start + call.windows])
        start += call.windows
    return parts


def _split(results: Sequence[Any], calls: Sequence[Call]) -> list[Any]:
    return [list(part) for part in _per_call(results, calls)]


class Encode(CallKind):
    name = "encode"

    def run(self, model: Any, calls: Sequence[Call]) -> list[Any]:
        if len(calls) == 1:
            return [model.encode(calls[0].args[0], **calls[0].options)]
        # A merged output comes back to the host, where it can be cut per call (on a GPU too: the copy is
        # small next to the encoder pass, and the calls that use it accept host memory).
        output = np.asarray(model.encode(_merged_features(calls), to_cpu=True))
        return [_storage(part) for part in _per_call(output, calls)]


class DetectLanguage(CallKind):
    name = "detect_language"

    def run(self, model: Any, calls: Sequence[Call]) -> list[Any]:
        if len(calls) == 1:
            return [model.detect_language(calls[0].args[0])]
        return _split(model.detect_language(_merged_features(calls)), calls)


class Align(CallKind):
    name = "align"

    @staticmethod
    def key(
        array: np.ndarray | None, start_sequence: Sequence[int], frames: list[Any], options: dict[str, Any]
    ) -> Hashable | None:
        if array is None or len(frames) != array.shape[0]:
            return None
        return ("align", array.shape[1:], array.dtype.str, tuple(start_sequence), tuple(sorted(options.items())))

    def run(self, model: Any, calls: Sequence[Call]) -> list[Any]:
        if len(calls) == 1:
            features, _array, start_sequence, text_tokens, num_frames = calls[0].args
            return [model.align(features, start_sequence, text_tokens, num_frames, **calls[0].options)]
        start_sequence = calls[0].args[2]
        text_tokens = [tokens for call in calls for tokens in call.args[3]]
        num_frames = [frames for call in calls for frames in call.args[4]]
        results = model.align(_merged_features(calls), start_sequence, text_tokens, num_frames, **calls[0].options)
        return _split(results, calls)


@dataclass(frozen=True)
class PromptShape:
    """What CTranslate2 needs equal across a batch (where <|startoftranscript|> is, and where the task tokens
    after it end), and the prompt's length."""

    sot_index: int
    task_end: int
    length: int

    @property
    def start_step(self) -> int:
        """Prompt tokens CTranslate2 feeds before decoding starts."""
        return 0 if self.task_end == 1 else self.task_end - 1

    @property
    def start_tokens(self) -> int:
        """Tokens decoding starts from: the last task token, and any prefix after it."""
        return self.length - self.start_step


class Generate(CallKind):
    name = "generate"

    def __init__(self, sot_id: int, no_timestamps_id: int) -> None:
        self.sot_id = sot_id
        self.no_timestamps_id = no_timestamps_id

    def prompt_shape(self, prompt: Sequence[int]) -> PromptShape | None:
        """CTranslate2's own reading of a prompt (task tokens lie between <|startoftranscript|> and
        <|notimestamps|> in the vocabulary)."""
        try:
            sot_index = list(prompt).index(self.sot_id)
        except ValueError:
            return None
        end = sot_index
        while end < len(prompt) and self.sot_id <= prompt[end] <= self.no_timestamps_id:
            end += 1
        return PromptShape(sot_index, end, len(prompt))

    @staticmethod
    def greedy(options: dict[str, Any]) -> bool:
        return options["beam_size"] == 1 and options["num_hypotheses"] == 1 and options["sampling_topk"] == 1

    def key(
        self, array: np.ndarray | None, prompts: Sequence[Sequence[int]], options: dict[str, Any]
    ) -> Hashable | None:
        """`options` has every option filled in (GENERATE_DEFAULTS)."""
        if array is None or len(prompts) != array.shape[0]:
            return None
        if options["asynchronous"] or options["return_logits_vocab"]:
            return None
        if not all(isinstance(token, int) for prompt in prompts for token in prompt):
            return None
        shapes = {self.prompt_shape(prompt) for prompt in prompts}
        if len(shapes) != 1 or None in shapes:
            return None  # CTranslate2 refuses it; let it say so
        (shape,) = shapes
        assert shape is not None
        compared = dict(options)
        if self.greedy(options) and shape.start_tokens == 1:
            del compared["max_length"]
        frozen = tuple(
            sorted((name, tuple(value) if isinstance(value, list) else value) for name, value in compared.items())
        )
        return ("generate", array.shape[1:], array.dtype.str, shape, frozen)

    def run(self, model: Any, calls: Sequence[Call]) -> list[Any]:
        if len(calls) == 1:
            return [model.generate(calls[0].args[0], calls[0].args[2], **calls[0].options)]
        options = dict(calls[0].options)
        # Only greedy calls merge across length limits (see `_fits`); the others share theirs.
        options["max_length"] = max(call.options["max_length"] for call in calls)
        prompts = [prompt for call in calls for prompt in call.args[2]]
        parts = _split(model.generate(_merged_features(calls), prompts, **options), calls)
        for index, call in enumerate(calls):
            if call.options["max_length"] < options["max_length"] and not all(
                self._fits(result, prompt, call.options)
                for result, prompt in zip(parts[index], call.args[2], strict=True)
            ):
                # It reached its own limit: alone it would have stopped there, with another score.
                parts[index] = model.generate(call.args[0], call.args[2], **call.options)
        return parts

    def _fits(self, result: Any, prompt: Sequence[int], options: dict[str, Any]) -> bool:
        """Whether a greedy decoding ended (with end of text) within what its own `max_length` allows.

        CTranslate2 decodes at most min(max_length / 2, max_length - start_step) steps; a greedy decoding
        that ended earlier is the same, token for token and score for score, under any longer limit.
        """
        shape = self.prompt_shape(prompt)
        assert shape is not None
        limit = options["max_length"]
        steps = min(limit // 2, limit - shape.start_step)
        return all(len(sequence) < steps for sequence in result.sequences_ids)
