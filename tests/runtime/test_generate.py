"""Generation over the reference back end: streaming, stop reasons and statistics."""

from __future__ import annotations

import pytest

from edgekit.errors import GenerationError
from edgekit.model import load
from edgekit.model.sampling import SamplingConfig
from edgekit.runtime import GenerationStats, TextStream, generate_tokens, open_backend


@pytest.fixture(scope="module")
def stories(models):
    return load(models / "stories260K.bin")


def test_streamed_text_equals_decoding_everything(stories):
    backend = open_backend(stories)
    prompt = stories.tokenizer.encode("Once upon a time there")
    stream = TextStream(stories.tokenizer, prompt)
    pieces = [stream.push(t) for t in generate_tokens(backend, prompt, 30)]
    assert stream.emitted + "" == stories.tokenizer.decode(prompt + stream.ids[len(prompt):])
    assert "Once upon a time there" + "".join(pieces) == stories.tokenizer.decode(stream.ids)


def test_stats_and_max_tokens(stories):
    stats = GenerationStats()
    tokens = list(generate_tokens(open_backend(stories), [1], 12, stats=stats))
    assert len(tokens) == 12 == stats.generated_tokens and stats.stop_reason == "max_tokens"
    assert stats.prompt_tokens == 1 and stats.prefill_tokens_per_second > 0 and stats.decode_tokens_per_second > 0


def test_context_end_stops_generation(stories):
    stats = GenerationStats()
    backend = open_backend(stories, context_length=10)
    tokens = list(generate_tokens(backend, [1, 403, 407], 50, stats=stats))
    assert stats.stop_reason == "context" and len(tokens) == 8


def test_end_of_story_stops_generation(stories):
    """llama2.c models end a story with BOS (run.c stops there); greedy stories260K does so at step 346."""
    unbounded = list(generate_tokens(open_backend(stories), [1], 400, stop_at_eos=False))
    assert unbounded.index(1) == 345
    stats = GenerationStats()
    tokens = list(generate_tokens(open_backend(stories), [1], 400, stats=stats))
    assert stats.stop_reason == "eos" and tokens == unbounded[:345]


def test_seeded_sampling_is_reproducible(stories):
    run = lambda: list(generate_tokens(open_backend(stories), [1], 20,
                                       SamplingConfig(temperature=0.9, top_p=0.9, seed=3)))
    assert run() == run()


def test_empty_prompt_and_overflow_are_clear_errors(stories):
    with pytest.raises(GenerationError, match="prompt"):
        list(generate_tokens(open_backend(stories), [], 5))
    with pytest.raises(GenerationError, match="exceed the context"):
        open_backend(stories, context_length=4).prefill([1, 2, 3, 4, 5])
    with pytest.raises(GenerationError, match="outside the vocabulary"):
        open_backend(stories).prefill([1, 9999])
