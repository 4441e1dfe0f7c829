"""The fabric LM head's weights (hls/lm_head.py) and its integer twin (hls/reference.py): packing round trip,
quantization error, refusals, and the twin against the float head."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import ConfigError
from edgekit.hls.design import HlsConfig, design_for
from edgekit.hls.lm_head import check_accumulator, head_qmax, quantize_head, unpack_head
from edgekit.hls.reference import lm_head_logits, rms_norm, top_k
from tests.hls.synthetic import synthetic_model


@pytest.mark.parametrize("bits,group,lanes", [(8, 64, 8), (4, 32, 3), (2, 96, 5)])
def test_pack_round_trip_and_error(bits, group, lanes):
    model = synthetic_model()                                     # dim 100: rows padded to whole groups
    design = design_for(model.config, HlsConfig(head_bits=bits, head_group=group, head_lanes=lanes, max_seq=16))
    weight = np.random.default_rng(bits).normal(0, 1, (design.vocab, design.dim)).astype(np.float32)
    weight[7] = 0.0                                               # an all-zero row: scale 0, sub-scales 0
    head = quantize_head(weight, design)
    assert head.words.size == design.head_words
    codes, sub = unpack_head(head.words, design)
    np.testing.assert_array_equal(codes, head.codes)
    np.testing.assert_array_equal(sub, head.sub_scales)
    assert np.abs(head.codes).max() <= head_qmax(bits)
    assert (head.codes[design.vocab:] == 0).all() and (head.codes[:, design.dim:] == 0).all()
    step = np.repeat(head.sub_scales.astype(np.float64), group, axis=1) * head.row_scales[:, None]
    restored = (head.codes * step)[:design.vocab, :design.dim]
    group_max = np.repeat(np.abs(np.pad(weight, ((0, 0), (0, design.head_groups * group - design.dim))))
                          .reshape(design.vocab, -1, group).max(-1), group, axis=1)[:, :design.dim]
    # rounding to the grid (half a step) plus the sub-scale's rounding (half of 1/255 of the row's largest step)
    bound = group_max / head_qmax(bits) * 0.5 + head.row_scales[:design.vocab, None] * (0.5 * head_qmax(bits) + 0.5)
    assert (np.abs(restored - weight) <= bound + 1e-6).all()
    assert (restored[7] == 0).all()


def test_the_twin_is_close_to_the_float_head_and_ranks_stably():
    model = synthetic_model()
    design = design_for(model.config, HlsConfig(head_bits=8, max_seq=16))
    weight = np.random.default_rng(1).normal(0, 1, (design.vocab, design.dim)).astype(np.float32)
    head = quantize_head(weight, design)
    norm = model.tensors["norm"]
    h = np.random.default_rng(2).normal(0, 1, (6, design.dim)).astype(np.float32)
    got = lm_head_logits(h, norm, np.float32(1e-5), head.codes, head.sub_scales, head.row_scales, design.vocab)
    want = rms_norm(h, norm, np.float32(1e-5)) @ weight.T
    assert np.max(np.abs(got - want)) < 0.03 * np.max(np.abs(want))
    ids, values = top_k(np.array([[1.0, 3.0, 3.0, 2.0, 3.0]], dtype=np.float32), 4)
    assert ids.tolist() == [[1, 2, 4, 3]] and values.tolist() == [[3.0, 3.0, 3.0, 2.0]]


def test_head_knobs_are_checked():
    with pytest.raises(ConfigError, match="head_bits"):
        HlsConfig(head_bits=3)
    with pytest.raises(ConfigError, match="head_group 24 must be a multiple of 16"):
        HlsConfig(head_bits=4, head_group=24)
    from edgekit.fpga.estimate import bitnet_config

    with pytest.raises(ConfigError, match="top_k 41 exceeds the vocabulary of 40"):
        design_for(bitnet_config(64, 64, 1, 1, 1, 40, 16), HlsConfig(top_k=41))


def test_the_accumulator_bound_is_enforced():
    from edgekit.fpga.estimate import bitnet_config

    # 127 x 127 x 4096 x 255 per group: 9,000 groups of 4,096 int8 weights pass 2^47
    design = design_for(bitnet_config(4096 * 9000, 64, 1, 1, 1, 64, 16), HlsConfig(head_bits=8, head_group=4096))
    with pytest.raises(ConfigError, match="48-bit accumulator") as error:
        check_accumulator(design)
    assert "--head-group" in error.value.fix


@pytest.mark.slow
def test_the_int4_head_keeps_most_int8_choices_on_real_text(models, shared):
    """The fabric int4 head against the host int8 head on the twin's final hidden states of real stories
    (docs/FPGA.md: 95.6% over 20 stories of the 3M model; here the first 3)."""
    from edgekit.fpga.host import Int8LmHead
    from edgekit.hls.model_data import extract_device_data, head_data
    from edgekit.hls.reference import HlsReference
    from edgekit.model import load
    from edgekit.model.reference import ReferenceForward
    from edgekit.quantize.evaluate import _read_documents

    model = load(models / "bitnet" / "bitllama2c_3M_ternary_lsbfirst.bin")
    design = design_for(model.config, HlsConfig(max_seq=512))
    data, forward = extract_device_data(model, design), ReferenceForward(model)
    weight, post = forward.weight(model.output_name)
    int8 = Int8LmHead(weight)
    agree, count = {8: 0, 4: 0}, 0
    heads = {bits: design_for(model.config, HlsConfig(max_seq=512, head_bits=bits)) for bits in agree}
    heads = {bits: (head_data(model, d, ReferenceForward(model))[0], d) for bits, d in heads.items()}
    for doc in _read_documents(shared / "data" / "tinystories_valid_first112k.txt")[:3]:
        tokens = np.asarray(model.tokenizer.encode(doc, add_bos=True)[:512])
        h = HlsReference(design, data.trits, data.params, data.rope).run(forward.rows("tok_embeddings", tokens), 0)
        base = (int8(rms_norm(h, model.tensors["norm"], np.float32(model.config.norm_eps))) * post).argmax(1)
        for bits, (head, d) in heads.items():
            got = lm_head_logits(h, model.tensors["norm"], np.float32(d.norm_eps), head.codes, head.sub_scales,
                                 head.row_scales, d.vocab)
            agree[bits] += int((got.argmax(1) == base).sum())
        count += len(tokens)
    assert agree[8] / count > 0.99
    assert 0.9 < agree[4] / count < agree[8] / count


def test_the_screened_top_k_is_the_full_one_when_the_candidates_hold_it():
    from edgekit.hls.reference import screened_top_k

    rng = np.random.default_rng(3)
    full = rng.normal(0, 1, (4, 300)).astype(np.float32)
    full[1, :] = 0.0                                                # all ties: the lowest ids win
    full[2, [5, 9, 40]] = 9.0                                       # a tie inside the top-k
    screen = full + rng.normal(0, 0.3, full.shape).astype(np.float32)
    for rows in (300, 8):
        ids, values = screened_top_k(full, screen, rows, 8)
        kept = np.zeros(full.shape, dtype=bool)
        np.put_along_axis(kept, top_k(screen, rows)[0].astype(np.int64), True, axis=1)
        want = top_k(np.where(kept, full, -np.inf), 8)                 # the full head's top-k among the kept
        np.testing.assert_array_equal(ids, want[0])
        np.testing.assert_array_equal(values, want[1])
    np.testing.assert_array_equal(screened_top_k(full, screen, 300, 8)[0], top_k(full, 8)[0])
    with pytest.raises(ConfigError, match="head_screen 4 needs top_k"):
        HlsConfig(head_screen=4, top_k=8)
    with pytest.raises(ConfigError, match="head_bits 8 or 4"):
        HlsConfig(head_screen=64, head_bits=2)


def test_the_screened_head_finds_the_int4_argmax_on_real_text(models, shared):
    """A 2-bit screen of every row and int4 rescoring of its 64 best against the full int4 head, on the twin's
    final hidden states of 3 stories of each bitllama2.c model (measured: the same argmax on all of them)."""
    from edgekit.hls.model_data import extract_device_data
    from edgekit.hls.reference import HlsReference, screened_top_k
    from edgekit.model import load
    from edgekit.model.reference import ReferenceForward
    from edgekit.quantize.evaluate import _read_documents

    docs = _read_documents(shared / "data" / "tinystories_valid_first112k.txt")[:3]
    for name in ("bitllama2c_1M_ternary_msbfirst.bin", "bitllama2c_3M_ternary_lsbfirst.bin"):
        model = load(models / "bitnet" / name)
        design = design_for(model.config, HlsConfig(max_seq=512, head_screen=64, kv_bits=8))
        data, forward = extract_device_data(model, design), ReferenceForward(model)
        same = count = 0
        for doc in docs:
            tokens = np.asarray(model.tokenizer.encode(doc, add_bos=True)[:512])
            h = HlsReference(design, data.trits, data.params, data.rope).run(forward.rows("tok_embeddings", tokens), 0)
            logits = [lm_head_logits(h, data.head_params[:design.dim], np.float32(design.norm_eps), head.codes,
                                     head.sub_scales, head.row_scales, design.vocab) for head in (data.head, data.screen)]
            ids, _ = screened_top_k(logits[0], logits[1], 64, design.hls.top_k)
            same += int((ids[:, 0] == logits[0].argmax(1)).sum())
            count += len(tokens)
        assert same / count > 0.995, (name, same, count)
