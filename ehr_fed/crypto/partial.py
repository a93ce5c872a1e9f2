"""Threshold decryption: partial decryptions at the share holders, their combination at one site.

A share holder ``i`` computes, for each ciphertext ``c``, ``c_i = c**(2 Delta s_i) mod n**2``
(:func:`partial_decrypt`). From the partials of any set ``S`` of ``t`` shares the combiner computes::

    c' = prod_(i in S) c_i**(2 mu_i) = c**(4 Delta**2 d) = 1 + n * 4 Delta**2 x   (mod n**2)
    x  = L(c') * (4 Delta**2)**-1 mod n,   L(u) = (u - 1) / n

with the integer Lagrange coefficients ``mu_i = Delta prod_(j in S, j != i) j / (j - i)``
(:func:`combine_partials`); negative ``mu_i`` go into a denominator ``D``, and with the numerator ``N``,
``L(N / D) = ((N - D) / n) * D**-1 mod n``, so the only inversion is modulo ``n``. The raw plaintexts are
then decoded by :func:`ehr_fed.crypto.decode_vector`, :func:`ehr_fed.crypto.decode_integers` or
:func:`ehr_fed.crypto.fields.decode_fields`, with exactly the checks of the single-key decryptions.

Cost: a partial decryption is one exponentiation modulo ``n**2`` with an exponent of ``|n**2| + |Delta| + 1``
bits per ciphertext, and no CRT (nobody knows ``p``, ``q``). Batches go through
``gmpy2.powmod_base_list``, which releases the GIL, so they are spread over threads of the holder's process
(the share never leaves it). Combination costs ``t`` exponentiations with exponents of a few bits plus one
inversion modulo ``n`` per ciphertext: negligible beside the partials.

A share holder must only partially decrypt aggregates it has checked (signed contributions of at least its
``min_sites``, the coordinator's sum): ``t`` holders that partially decrypt a ciphertext decrypt it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping

import gmpy2
from phe import paillier

from .errors import KeyMismatchError, PayloadError
from .keys import check_public_key, key_fingerprint
from .parallel import map_in_threads
from .serialization import check_ciphertexts
from .threshold import ThresholdError, ThresholdKeyShare, check_threshold_params, lagrange_coefficients
from .vector import EncryptedVector

__all__ = ["partial_decrypt", "combine_partials", "raw_ciphertexts"]

_MPZ = type(gmpy2.mpz(0))


def raw_ciphertexts(public_key, ciphertexts) -> list:
    """Raw ciphertexts (gmpy2 integers) of an EncryptedVector, of ``phe.EncryptedNumber`` or of ints, checked.

    Every ciphertext must be under ``public_key`` and be a unit in ``[1, n**2)``.

    Raises
    ------
    KeyMismatchError
        If a vector or EncryptedNumber was encrypted under another key.
    PayloadError
        If a raw ciphertext is out of range or shares a factor with ``n``.
    """
    if isinstance(ciphertexts, EncryptedVector):
        if ciphertexts.public_key != public_key:
            raise KeyMismatchError(
                f"the vector was encrypted under key {key_fingerprint(ciphertexts.public_key)[:16]}, not under this "
                f"share's public key {key_fingerprint(public_key)[:16]}"
            )
        values = list(ciphertexts._ciphertexts)
    else:
        if isinstance(ciphertexts, (str, bytes)) or not hasattr(ciphertexts, "__iter__"):
            raise TypeError(
                "ciphertexts must be an EncryptedVector or a sequence of ciphertexts (ints or "
                f"phe.EncryptedNumber), got {type(ciphertexts).__name__}"
            )
        values = []
        for index, c in enumerate(ciphertexts):
            if isinstance(c, paillier.EncryptedNumber):
                if c.public_key != public_key:
                    raise KeyMismatchError(f"ciphertext {index} was encrypted under another public key")
                c = c.ciphertext(be_secure=False)
            elif isinstance(c, bool) or not isinstance(c, (int, _MPZ)):
                raise TypeError(f"ciphertext {index} must be an int or phe.EncryptedNumber, got {type(c).__name__}")
            values.append(c if type(c) is _MPZ else gmpy2.mpz(c))
    check_ciphertexts(public_key, values, out_of_range="is outside [1, n**2): not a ciphertext of this key")
    return values


def partial_decrypt(share: ThresholdKeyShare, ciphertexts, *, workers: int | None = None) -> list[int]:
    """Partial decryptions ``c**(2 Delta s_i) mod n**2`` of ``ciphertexts`` with one key share.

    Parameters
    ----------
    share : ThresholdKeyShare
    ciphertexts : EncryptedVector, or sequence of int or phe.EncryptedNumber
        Under ``share.public_key``.
    workers : int, optional
        Threads of this process (``None``: one per core, at most 8, for 16 ciphertexts or more; ``1``: the
        calling thread).

    Returns
    -------
    list of int, shape (n_ciphertexts,)
        Send them, with ``share.index``, to the combiner (:func:`combine_partials`).
    """
    if not isinstance(share, ThresholdKeyShare):
        raise TypeError(f"share must be a ThresholdKeyShare, got {type(share).__name__}")
    public_key = share.public_key
    values = raw_ciphertexts(public_key, ciphertexts)
    exponent = gmpy2.mpz(2 * share.delta * share.share)
    nsquare = gmpy2.mpz(public_key.nsquare)
    out = map_in_threads(lambda chunk: gmpy2.powmod_base_list(chunk, exponent, nsquare), values, workers)
    return [int(c) for c in out]


def _normalize_partials(partials, n_shares: int, nsquare: int) -> dict[int, list]:
    items = partials.items() if isinstance(partials, Mapping) else partials
    out: dict[int, list] = {}
    for entry in items:
        try:
            index, values = entry
        except (TypeError, ValueError):
            raise TypeError("partials must map share index -> sequence of partial decryptions") from None
        if isinstance(index, bool):
            raise TypeError(f"share index must be an int, got {index!r}")
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"share index must be an int, got {type(index).__name__}") from None
        if not 1 <= index <= n_shares:
            raise ThresholdError(f"share index {index} is outside [1, n_shares={n_shares}]")
        if index in out:
            raise ThresholdError(f"share {index} sent partial decryptions twice; keep one set per share")
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise TypeError(f"partial decryptions of share {index} must be a sequence of ints")
        checked = []
        for position, c in enumerate(values):
            if isinstance(c, bool) or not isinstance(c, (int, _MPZ)):
                raise TypeError(f"partial decryption {position} of share {index} must be an int, got "
                                f"{type(c).__name__}")
            if not 0 < c < nsquare:
                raise PayloadError(f"partial decryption {position} of share {index} is outside [1, n**2)")
            checked.append(c if type(c) is _MPZ else gmpy2.mpz(c))
        out[index] = checked
    return out


def combine_partials(public_key, partials, threshold: int, n_shares: int, *, workers: int | None = None,
                     ciphertexts=None, verification=None, proofs=None) -> list[int]:
    """Raw plaintexts in ``[0, n)`` from the partial decryptions of at least ``threshold`` shares.

    Parameters
    ----------
    public_key : phe.PaillierPublicKey
    partials : mapping of int to sequence of int
        Share index (``1..n_shares``) -> that share's :func:`partial_decrypt` output (also accepted: an
        iterable of ``(index, partials)`` pairs). When more than ``threshold`` shares are given, the
        ``threshold`` lowest indices are used.
    threshold, n_shares : int
        ``t`` and ``l`` of the threshold key.
    workers : int, optional
        Threads for the exponentiations (as in :func:`partial_decrypt`).
    ciphertexts, verification, proofs : optional
        To check every share's proof before combining: the ciphertexts that were partially decrypted, the
        key's :class:`~ehr_fed.crypto.VerificationKeys` and a mapping share index -> its
        :class:`~ehr_fed.crypto.PartialProof` (see :func:`ehr_fed.crypto.verify_partial`). All three or none.

    Returns
    -------
    list of int, shape (n_ciphertexts,)
        Decode with :func:`ehr_fed.crypto.decode_vector`, :func:`~ehr_fed.crypto.decode_integers` or
        :func:`ehr_fed.crypto.fields.decode_fields`.

    Raises
    ------
    ThresholdError
        Fewer than ``threshold`` shares, an index outside ``[1, n_shares]`` or given twice, partials of
        different lengths, a proof that fails, or partials that do not combine to a valid decryption (one of
        them is wrong: a random or garbled partial is detected here with overwhelming probability, a
        deliberately shifted one only by the proofs).
    PayloadError
        A partial decryption outside ``[1, n**2)``.
    """
    check_public_key(public_key)
    threshold, n_shares = check_threshold_params(threshold, n_shares)
    n = gmpy2.mpz(public_key.n)
    nsquare = n * n
    given = _normalize_partials(partials, n_shares, nsquare)
    if len(given) < threshold:
        raise ThresholdError(
            f"got partial decryptions of {len(given)} share(s) {sorted(given)}, need threshold={threshold} "
            "distinct shares; collect more share holders' partial decryptions"
        )
    lengths = {index: len(values) for index, values in given.items()}
    if len(set(lengths.values())) > 1:
        raise ThresholdError(f"partial decryptions of different lengths per share: {lengths}; every share "
                             "must partially decrypt the same ciphertexts")
    if (ciphertexts, verification, proofs) != (None, None, None):
        _verify_all(public_key, given, ciphertexts, verification, proofs, threshold, n_shares, workers)
    chosen = sorted(given)[:threshold]
    mus = lagrange_coefficients(chosen, n_shares)
    count = next(iter(lengths.values()))
    numerator = [gmpy2.mpz(1)] * count
    denominator = [gmpy2.mpz(1)] * count
    for index in chosen:
        mu = mus[index]
        exponent = gmpy2.mpz(2 * abs(mu))
        powered = map_in_threads(lambda chunk, e=exponent: gmpy2.powmod_base_list(chunk, e, nsquare),
                                 given[index], workers)
        target = numerator if mu > 0 else denominator
        for k, value in enumerate(powered):
            target[k] = target[k] * value % nsquare
    scale = gmpy2.invert(4 * gmpy2.mpz(math.factorial(n_shares)) ** 2, n)
    out = []
    for k, (num, den) in enumerate(zip(numerator, denominator, strict=True)):
        diff = (num - den) % nsquare
        y_den, rest = divmod(diff, n)
        if rest:
            raise ThresholdError(
                f"partial decryptions of shares {chosen} do not combine at position {k}: one of them is wrong "
                "(altered in transit, computed with another share, or for other ciphertexts); verify them with "
                "verify_partial or retry with other shares"
            )
        try:
            den_inverse = gmpy2.invert(den % n, n)
        except ZeroDivisionError:
            raise ThresholdError(f"partial decryption at position {k} is not invertible modulo n") from None
        out.append(int(y_den * den_inverse % n * scale % n))
    return out


def _verify_all(public_key, given, ciphertexts, verification, proofs, threshold, n_shares, workers) -> None:
    from .proofs import verify_partial
    from .threshold import VerificationKeys

    if ciphertexts is None or verification is None or proofs is None:
        raise TypeError("pass ciphertexts, verification and proofs together (or none of them)")
    if not isinstance(verification, VerificationKeys):
        raise TypeError(f"verification must be VerificationKeys, got {type(verification).__name__}")
    if verification.n != public_key.n or (verification.threshold, verification.n_shares) != (threshold, n_shares):
        raise KeyMismatchError("the verification keys belong to another threshold key than public_key, "
                               "threshold and n_shares")
    missing = sorted(set(given) - set(proofs))
    if missing:
        raise ThresholdError(f"no proof for the partial decryptions of share(s) {missing}")
    values = raw_ciphertexts(public_key, ciphertexts)
    failed = [i for i in sorted(given)
              if not verify_partial(verification, i, values, given[i], proofs[i], workers=workers)]
    if failed:
        raise ThresholdError(
            f"the proofs of share(s) {failed} fail: their partial decryptions are wrong; combine without them"
        )
