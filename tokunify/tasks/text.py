"""Text and speech language modelling: the text LM, the speech LM and speech continuation."""

from types import MappingProxyType
from typing import Any

import numpy as np

from tokunify.core.layouts import get_layout
from tokunify.core.vocab import UnifiedVocab
from tokunify.tasks.base import (
    FormatError,
    RecordLike,
    TaskFormat,
    stream_body,
)


class TextFormat(TaskFormat):
    """Text LM.

    ``Utterance(text=[5, 6])`` -> ``[bos, task:text, text_start, T:5, T:6, text_end, eos]``,
    mask ``[0, 0, 1, 1, 1, 1, 1]``. Generation continues the given text: ``prompt(Utterance(text=[5]))``
    is ``[bos, task:text, text_start, T:5]`` (the text segment left open), and the output is the
    whole segment, the given text then its continuation.
    """

    task = "text"
    needs_stream = False
    target_modality = "text"
    requires = ("text",)
    input_modality = "text"
    preset = MappingProxyType(
        {"do_sample": True, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 128}
    )

    def targets(self, utt, target, rng):
        return [("text", utt.text_ids())]

    def prompt(self, utt):
        text = utt.text_ids() if utt.text is not None else np.zeros(0, np.int64)
        return np.concatenate([super().prompt(utt), text]).astype(np.int64)


class SpeechFormat(TaskFormat):
    """Unconditional speech LM on one stream.

    ``Utterance(speech={"units": [3, 7]})`` -> ``[bos, task:speech, units_start, u:3, u:7, units_end, eos]``,
    mask ``[0, 0, 1, 1, 1, 1, 1]``.
    """

    task = "speech"
    requires = ("speech",)

    def targets(self, utt, target, rng):
        return [(self.stream, utt.stream(self.stream))]


class ContinueFormat(TaskFormat):
    """Speech continuation: the first part of an utterance is the prompt, the rest the target.

    The split is at ``prompt_fraction`` of the frames, or uniform in ``fraction_range`` when an
    ``rng`` is given. With units ``[3, 7, 9, 9]`` and fraction 0.5::

        ids  [bos, task:continue, units_start, u:3, u:7, u:9, u:9, units_end, eos]
        mask [0,   0,             0,           0,   0,   1,   1,   1,         1]

    ``prompt(utt)`` uses the *whole* utterance as the prefix: ``[bos, task:continue, units_start, u:3 .. u:9]``.
    """

    task = "continue"
    requires = ("speech",)
    min_frames = 2
    input_modality = "speech"
    preset = MappingProxyType(
        {
            "do_sample": True,
            "temperature": 0.9,
            "top_k": 50,
            "top_p": 0.95,
            "repetition_penalty": 1.05,
            "max_new_tokens": 300,
        }
    )
    metric = "continuation"
    eval_by_default = False  # long sampled generations: asked for by name

    def __init__(
        self,
        vocab: UnifiedVocab,
        stream: str | None = None,
        loss_on_input: bool = False,
        input_streams: tuple[str, ...] = (),
        prompt_fraction: float = 0.5,
        fraction_range: tuple[float, float] = (0.2, 0.8),
    ):
        super().__init__(vocab, stream, loss_on_input, input_streams)
        if self.input_streams != (self.stream,):
            raise FormatError(
                f"continue: the prompt is the head of stream {self.stream!r}; other input streams "
                f"{list(self.input_streams)} cannot be read"
            )
        self.prompt_fraction = prompt_fraction
        self.fraction_range = fraction_range

    def targets(self, utt, target, rng):
        return [(self.stream, utt.stream(self.stream))]

    def request(self, r: RecordLike) -> Any:
        """Evaluation prompts are the first ``prompt_fraction`` of the record's frames."""
        local = np.asarray(r.streams[self.stream], dtype=np.int64)
        return local[..., : max(1, self._split(local.shape[-1], None))]

    def _split(self, frames: int, rng: np.random.Generator | None) -> int:
        frac = rng.uniform(*self.fraction_range) if rng is not None else self.prompt_fraction
        return round(frames * frac)

    def _head(self) -> np.ndarray:
        """The prefix and the stream's start marker: everything before the stream body."""
        v = self.vocab
        return np.append(v.prefix(self.task), v.stream_start(self.stream)).astype(np.int64)

    def build(self, utt, target=None, rng=None):
        v, spec = self.vocab, self.vocab.stream(self.stream)
        local = utt.stream(self.stream)
        body = stream_body(v, self.stream, local)
        frames = local.shape[-1]
        head = self._head()
        layout = get_layout(spec.layout)
        split = len(head) + layout.frame_boundary(self._split(frames, rng), spec.codebooks)
        ids = np.concatenate([head, body, [v.stream_end(self.stream), v.eos]]).astype(np.int64)
        mask = np.zeros(len(ids), dtype=bool)
        mask[split:] = True
        if self.loss_on_input:
            mask[v.prefix_len :] = True
        return ids, mask

    def prompt(self, utt):
        spec = self.vocab.stream(self.stream)
        local = utt.stream(self.stream)
        body = stream_body(self.vocab, self.stream, local)
        keep = get_layout(spec.layout).continuation_length(local.shape[-1], spec.codebooks)
        return np.concatenate([self._head(), body[:keep]]).astype(np.int64)
