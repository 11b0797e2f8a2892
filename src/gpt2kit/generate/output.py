"""The Python side of one sample: its tokens, where it ends (EOS, a stop string) and its text.

The engine decodes on the device and hands each sample its new tokens at check points;
`SampleOutput` takes them, notices EOS and stop strings, and gives the text to stream.
"""

from __future__ import annotations

from gpt2kit.generate.params import GenerationParams
from gpt2kit.tokenizer import Tokenizer


class SampleOutput:
    """One sample's tokens, EOS and stop-string checks, and streamed text.

    `ids` are the tokens generated so far (up to and including the token that completed a
    stop string; EOS is not kept), `finish` why it ended (`eos`, `stop`, `length`, or None
    while it goes on). Text is decoded only when stop strings or streaming need it, and
    incrementally: a tail of recent tokens is re-decoded and folded into a fixed prefix once it
    ends on a whole character (byte-level BPE decodes piecewise exactly at such boundaries).
    """

    def __init__(self, tokenizer: Tokenizer, params: GenerationParams, track_text: bool) -> None:
        self.tokenizer = tokenizer
        self.eos = None if params.ignore_eos else tokenizer.eos_id
        self.stops = params.stop
        self.max_stop = max((len(s) for s in self.stops), default=0)
        self.track_text = track_text or bool(self.stops)
        self.ids: list[int] = []
        self.finish: str | None = None
        self.cut: int | None = None
        self._fixed, self._tail = "", 0
        self._searched = 0
        self.emitted = 0

    def text_so_far(self) -> str:
        """The text of the tokens so far (not cut at a stop string)."""
        tail = self.tokenizer.decode(self.ids[self._tail :])
        if len(self.ids) - self._tail >= 32 and not tail.endswith("\ufffd"):
            self._fixed, self._tail, tail = self._fixed + tail, len(self.ids), ""
        return self._fixed + tail

    def feed(self, new: list[int]) -> None:
        """Take this sample's tokens since the last check, stopping at EOS or a stop string."""
        for tok in new:
            if tok == self.eos:
                self.finish = "eos"
                return
            self.ids.append(tok)
            if self.stops:
                text = self.text_so_far()
                begin = max(0, self._searched - self.max_stop + 1)
                hits = [i for i in (text.find(s, begin) for s in self.stops) if i >= 0]
                if hits:
                    self.cut, self.finish = min(hits), "stop"
                    return
                self._searched = len(text.rstrip("\ufffd"))

    def final_text(self) -> str:
        """The sample's text, cut before the stop string that ended it."""
        text = self.text_so_far() if self.track_text else self.tokenizer.decode(self.ids)
        return text[: self.cut] if self.cut is not None else text

    def new_text(self) -> str:
        """Text not shown yet, holding back an unfinished character or a possible stop start."""
        if self.finish is not None:
            text, safe = self.final_text(), None
        else:
            text = self.text_so_far()
            safe = len(text.rstrip("\ufffd"))
            for s in self.stops:
                for k in range(min(len(s) - 1, safe), 0, -1):
                    if text[:safe].endswith(s[:k]):
                        safe -= k
                        break
        end = len(text) if safe is None else safe
        if end <= self.emitted:
            return ""
        piece, self.emitted = text[self.emitted : end], end
        return piece
