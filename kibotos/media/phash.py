"""64-bit DCT perceptual hash (pHash) with OpenCV, and Hamming distance.

The classic construction: grey 32x32 (area resize), 2-D DCT, keep the 8x8 lowest
frequencies, set a bit where a coefficient exceeds the median of those 64 (the DC term
takes part in the median but never dominates it). Robust to re-encoding, small
brightness/contrast changes and rescaling; a mirrored frame gets a different hash, which
is why callers also store ``phash(np.fliplr(img))``.

Hashes are Python ints in ``[0, 2**64)`` so that they map directly onto ClickHouse
``UInt64``; bit 63 is the first coefficient in row-major order.
"""

from __future__ import annotations

import cv2
import numpy as np

_HASH_SIZE = 8
_DCT_SIZE = 32
_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 2:
        return image
    raise ValueError(f"expected an RGB HxWx3 or grey HxW image, got shape {image.shape}")


def phash(image: np.ndarray) -> int:
    """The 64-bit DCT perceptual hash of an RGB (HxWx3) or grey (HxW) uint8 image."""
    small = cv2.resize(_grey(image), (_DCT_SIZE, _DCT_SIZE), interpolation=cv2.INTER_AREA)
    dct = cv2.dct(small.astype(np.float32))
    low = dct[:_HASH_SIZE, :_HASH_SIZE].ravel()
    bits = (low > np.median(low)).astype(np.uint64)
    return int((bits * _WEIGHTS).sum(dtype=np.uint64))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (int(a) ^ int(b)).bit_count()
