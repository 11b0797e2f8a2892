"""The wire format: OpenAI's request and response objects (and the tokenizer endpoints') as
Pydantic models, which FastAPI validates requests against and publishes in `/openapi.json`.

Requests accept what OpenAI's API accepts for these endpoints and nothing else (an unknown
field is a 400 naming it, not silently ignored), plus our decoding extensions `top_k`,
`min_p`, `repetition_penalty`, `no_repeat_ngram_size` and `ignore_eos` with the meaning they
have in `gpt2kit generate`. OpenAI fields we cannot honour (`suffix`, penalties other than 0,
`logit_bias`, `best_of` other than `n`) are accepted only at their neutral values.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

MAX_N = 128  # choices per prompt, as OpenAI allows
MAX_STOPS = 4
MAX_LOGPROBS = 5

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

TokenIds = list[Annotated[StrictInt, Field(ge=0)]]
Stop = StrictStr | Annotated[list[StrictStr], Field(max_length=MAX_STOPS)] | None


class StreamOptions(BaseModel):
    """`stream_options`: `include_usage` adds a last chunk with empty choices and the usage."""

    model_config = _STRICT
    include_usage: bool = False
    continuous_usage_stats: bool = False


class _Sampling(BaseModel):
    """The decoding controls both endpoints share."""

    model_config = _STRICT

    model: str | None = Field(None, description="The model id (GET /v1/models); none: ours.")
    temperature: float = Field(1.0, ge=0, description="0: greedy (the most likely token).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling (1: off).")
    n: int = Field(1, ge=1, le=MAX_N, description="Choices per prompt.")
    stop: Stop = Field(None, description="Up to 4 strings that end a choice (not returned).")
    seed: int | None = Field(None, description="The same seed gives the same samples.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, description="Only 0 (use repetition_penalty).")
    frequency_penalty: float = Field(0.0, description="Only 0 (use repetition_penalty).")
    logit_bias: dict[str, float] | None = Field(None, description="Only empty.")
    user: str | None = None
    # Our extensions, with `gpt2kit generate`'s meaning.
    top_k: int = Field(0, ge=0, description="Sample among the K most likely tokens (0: off).")
    min_p: float = Field(0.0, ge=0, le=1, description="Min-p filtering (0: off).")
    repetition_penalty: float = Field(1.0, gt=0, description="Hugging Face's (1: off).")
    no_repeat_ngram_size: int = Field(0, ge=0, description="Never repeat an n-gram (0: off).")
    ignore_eos: bool = Field(False, description="Go on past <|endoftext|>.")


class CompletionRequest(_Sampling):
    """`POST /v1/completions`."""

    prompt: StrictStr | list[StrictStr] | TokenIds | list[TokenIds] = Field(
        description="A string, a list of strings, a list of token ids or a list of lists."
    )
    max_tokens: int | None = Field(
        None, ge=0, description="Tokens to generate at most (default 16, or the server's limit)."
    )
    echo: bool = Field(False, description="Return the prompt before the completion.")
    logprobs: int | None = Field(
        None, ge=0, le=MAX_LOGPROBS, description="Log-probabilities with the N most likely."
    )
    best_of: int | None = Field(None, ge=1, description="Only equal to n.")
    suffix: str | None = Field(None, description="Not supported (only null).")


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[dict] | None = None
    name: str | None = None


class ChatRequest(_Sampling):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="Tokens to generate at most.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Same as max_tokens.")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)


# -- responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobEntry(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprobEntry] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length"]


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gpt2kit"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeRequest(BaseModel):
    """`POST /tokenize`: the token ids of `prompt`."""

    model_config = _STRICT
    prompt: StrictStr
    model: str | None = None


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeRequest(BaseModel):
    """`POST /detokenize`: the text of `tokens`."""

    model_config = _STRICT
    tokens: TokenIds
    model: str | None = None


class DetokenizeResponse(BaseModel):
    prompt: str


class TokenizerInfo(BaseModel):
    tokenizer: str
    vocab_size: int
    eos_token: str
    eos_token_id: int
    model_max_length: int


class Health(BaseModel):
    status: Literal["ok"]
    running: int
    waiting: int


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's shape."""

    error: ErrorDetail
