import numpy as np
import pytest

from ehr_fed.crypto import EncodingOverflowError, KeyMismatchError, decrypt_vector
from ehr_fed.crypto.fields import (
    decrypt_fields,
    encrypt_fields,
    expand_segments,
    field_plan,
    pack_fields,
    unpack_fields,
)
from ehr_fed.crypto.serialization import vector_from_bytes, vector_to_bytes


def _random_fields(rng, widths, parts):
    m = (np.left_shift(np.int64(1), widths - 1) - 1) // parts  # the sum of `parts` stays within the width
    return [rng.integers(-m, m + 1) for _ in range(parts)]


def test_segments_expand_to_field_widths():
    assert expand_segments([[2, [5, 3]], [1, [54]]]).tolist() == [5, 3, 5, 3, 54]
    for bad in ([[1, [1]]], [[1, [55]]], [[1, "x"]], [[-1, [4]]]):
        with pytest.raises(ValueError):
            expand_segments(bad)


def test_fields_fill_plaintexts_without_splitting_a_field():
    widths = expand_segments([[100, [29, 27, 19]]])
    plan = field_plan(widths, 2046)
    sizes = np.diff(plan.bit_starts)
    assert (sizes <= 2046).all() and sizes[:-1].min() > 2046 - 29
    assert plan.n_chunks == -(-int(widths.sum()) // (2046 - 28))  # no more chunks than whole fields force


def test_sums_of_encrypted_fields_decrypt_exactly(keypair):
    pk, sk = keypair
    rng = np.random.default_rng(5)
    widths = expand_segments([[300, [24, 22, 14]], [7, [54]], [50, [2]]])
    parts = _random_fields(rng, widths, 3)
    total = sum(encrypt_fields(pk, x, widths, max_terms=3) for x in parts)
    again = vector_from_bytes(pk, vector_to_bytes(total))  # through the wire format
    assert np.array_equal(decrypt_fields(sk, again, widths), parts[0] + parts[1] + parts[2])
    assert len(total.ciphertexts) < widths.size / 50  # many fields per ciphertext
    with pytest.raises(TypeError, match="decrypt_integers"):
        decrypt_vector(sk, total)


def test_fields_over_their_width_or_not_integers_are_refused(keypair):
    pk, _ = keypair
    widths = expand_segments([[3, [8]]])
    with pytest.raises(EncodingOverflowError, match="field 1 = 128 does not fit its 8-bit width"):
        encrypt_fields(pk, [0, 128, -3], widths, max_terms=2)
    with pytest.raises(EncodingOverflowError, match="field 2 is 0.5, not an integer"):
        pack_fields(np.array([0.0, 1.0, 0.5]), field_plan(widths, 1000))


def test_a_sum_beyond_the_widths_is_detected_not_wrapped():
    widths = expand_segments([[4, [6]]])
    plan = field_plan(widths, 1000)
    big = pack_fields(np.array([0, 0, 0, 31]), plan)[0]
    with pytest.raises(EncodingOverflowError, match="a field sum left its width"):
        unpack_fields([big + big], plan)  # the top field sums to 62 > 31


def test_other_key_is_refused(keypair, other_keypair):
    pk, _ = keypair
    _, sk2 = other_keypair
    widths = expand_segments([[10, [10]]])
    ev = encrypt_fields(pk, np.arange(10), widths, max_terms=1)
    with pytest.raises(KeyMismatchError):
        decrypt_fields(sk2, ev, widths)
