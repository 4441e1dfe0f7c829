"""The TLMM layout: codes round-trip, and table lookups over the packed words give the exact integer matmul."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.hls.packing import TritCode, encode_groups, pack_matrix, tlmm_by_tables, unpack_matrix


@pytest.mark.parametrize("group,half,bits,entries", [(1, True, 2, 2), (2, True, 4, 5), (3, True, 5, 14),
                                                     (3, False, 5, 27), (4, True, 7, 41), (5, True, 8, 122),
                                                     (5, False, 8, 243)])
def test_code_widths(group, half, bits, entries):
    code = TritCode(group, half)
    assert (code.bits, code.entries) == (bits, entries)
    assert code.per_word == 64 // bits


def test_zero_group_and_mirror_codes():
    code = TritCode(3, True)
    trits = np.array([[0, 0, 0, 1, 1, 1, -1, -1, -1, 1, 0, -1]], dtype=np.int8)
    codes = encode_groups(trits, code)
    # all-zero group -> index Z = 13, sign 0; (1,1,1) has full index 26 > Z -> sign 1 and 26 - 26 = 0;
    # (-1,-1,-1) is index 0; (1,0,-1) has digits (2,1,0) -> 2 + 1*3 = 5 <= Z, sign 0
    assert codes.tolist() == [[13, (1 << 4) | 0, 0, 5]]


def test_base3_words_hold_five_trits_a_byte():
    """trit_pack "base3": 8 bytes of 5 base-3 digits (digit = trit + 1, least significant first), 13 groups
    of 3 trits a word and the 40th digit unused (1: a zero trit)."""
    code = TritCode(3, True, base3=True)
    assert (code.per_word, code.bits, code.tile_bits) == (13, 5, 65)
    assert [TritCode(g, True, True).per_word for g in (1, 2, 4, 5)] == [40, 20, 10, 8]
    trits = np.zeros((1, 39), dtype=np.int8)
    trits[0, :5] = [1, -1, 0, 0, 1]                 # digits 2, 0, 1, 1, 2 -> 2 + 0 + 9 + 27 + 162 = 200
    word = int(pack_matrix(trits, code, 1)[0])
    assert word & 0xFF == 200
    assert [(word >> (8 * b)) & 0xFF for b in range(1, 8)] == [121] * 7    # all-zero trits: 1+3+9+27+81
    # 39 trits of 2B4T's 2560-wide rows: 1.641 bits a weight against 1.778 for 12 five-bit codes a word
    assert pack_matrix(np.zeros((1, 2560), np.int8), code, 1).size == 66
    assert pack_matrix(np.zeros((1, 2560), np.int8), TritCode(3, True), 1).size == 72


@settings(max_examples=60, deadline=None)
@given(out=st.integers(1, 40), inp=st.integers(1, 70), group=st.integers(1, 5), half=st.booleans(),
       base3=st.booleans(), lanes=st.sampled_from([1, 3, 4, 16]), tokens=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_pack_round_trip_and_table_matmul(out, inp, group, half, base3, lanes, tokens, seed):
    rng = np.random.default_rng(seed)
    trits = rng.integers(-1, 2, (out, inp)).astype(np.int8)
    code = TritCode(group, half, base3)
    words = pack_matrix(trits, code, lanes)
    assert words.dtype == np.uint64
    np.testing.assert_array_equal(unpack_matrix(words, out, inp, code, lanes), trits)
    q = rng.integers(-127, 128, (tokens, inp))
    np.testing.assert_array_equal(tlmm_by_tables(words, q, out, code, lanes), q @ trits.T.astype(np.int64))
