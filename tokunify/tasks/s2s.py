"""Speech to speech: a spoken source and its spoken target, joined by a pair key."""

from types import MappingProxyType

from tokunify.core.vocab import UnifiedVocab
from tokunify.tasks.base import (
    DEFAULT_PAIR_KEY,
    FormatError,
    TaskFormat,
    Utterance,
)


class S2SFormat(TaskFormat):
    """Speech to speech (e.g. spoken question -> spoken answer): ``build(source, target)``.

    source units ``[3]``, target units ``[8, 9]`` ->
    ``[bos, task:s2s, units_start, u:3, units_end, units_start, u:8, u:9, units_end, eos]``,
    mask ``[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]``. ``parse`` returns ``(source, target)`` utterances.
    """

    task = "s2s"
    requires = ("speech",)
    input_modality = "speech"
    preset = MappingProxyType(
        {
            "do_sample": True,
            "temperature": 0.7,
            "top_k": 20,
            "top_p": 0.95,
            "repetition_penalty": 1.0,
            "max_new_tokens": 400,
        }
    )
    metric = "speech_roundtrip"
    metric_keys = MappingProxyType({"roundtrip_wer": "wer", "n": "pairs"})

    def __init__(
        self,
        vocab: UnifiedVocab,
        stream: str | None = None,
        loss_on_input: bool = False,
        pair_key: str = DEFAULT_PAIR_KEY,
        input_streams: tuple[str, ...] = (),
    ):
        super().__init__(vocab, stream, loss_on_input, input_streams)
        self.pair_key = pair_key

    @classmethod
    def from_options(cls, vocab, options):
        return cls(
            vocab, options.stream, options.loss_on_input, options.pair_key, options.input_streams
        )

    @property
    def record_streams(self):
        return self.input_streams  # the target stream is the pair's (pair_eligible)

    def eligible(self, r):
        return super().eligible(r) and bool(r.meta.get(self.pair_key))

    def pair_id(self, r):
        return str(r.meta[self.pair_key])

    def pair_eligible(self, target):
        return self.frames(target) > 0

    def inputs(self, utt):
        return self.speech_inputs(utt)

    def targets(self, utt, target, rng):
        if target is None:
            raise FormatError("s2s needs a target utterance: build(source, target)")
        return [(self.stream, target.stream(self.stream))]

    def parse(self, ids):
        parsed = self.parse_checked(ids)
        if self.input_streams != (self.stream,):  # a source segment per input stream, the target
            n, segs = len(self.input_streams), parsed.segments
            src = Utterance(speech={s.modality: s.ids for s in segs[:n]})
            tgt = Utterance(speech={self.stream: segs[n].ids}) if len(segs) > n else Utterance()
            return src, tgt
        speech = [s for s in parsed.segments if s.modality == self.stream]
        src = Utterance(speech={self.stream: speech[0].ids}) if speech else Utterance()
        tgt = Utterance(speech={self.stream: speech[1].ids}) if len(speech) > 1 else Utterance()
        return src, tgt
