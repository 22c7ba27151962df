"""Generated keyword-spotting-shaped data: 49 frames × 10 cepstral coefficients per utterance, no download.

Each keyword class is a smooth time-frequency template (a few Gaussian bumps over frames and coefficients, like
formant tracks in MFCC features); an utterance is its class template shifted in time by up to ``max_shift``
frames, scaled by a random gain, plus background noise. The shapes are those of the KWS models that ship to
microcontrollers (DS-CNN / Conv1D on 49×10 MFCC frames), so a Conv1D model goes through every stage.
"""

from __future__ import annotations

import numpy as np

from workbench.data.images import ImageData, from_arrays


def _templates(rng: np.random.Generator, num_classes: int, frames: int, coefficients: int) -> np.ndarray:
    t, c = np.arange(frames)[:, None], np.arange(coefficients)[None, :]
    out = np.zeros((num_classes, frames, coefficients), np.float64)
    for k in range(num_classes):
        for _ in range(4):
            centre_t, centre_c = rng.uniform(8, frames - 8), rng.uniform(0, coefficients - 1)
            width_t, width_c, height = rng.uniform(2, 6), rng.uniform(0.8, 2.5), rng.uniform(-2, 2)
            out[k] += height * np.exp(-(((t - centre_t) / width_t) ** 2) - ((c - centre_c) / width_c) ** 2)
    return out


def make_keywords(
    num_train: int = 2000,
    num_val: int = 500,
    num_classes: int = 8,
    frames: int = 49,
    coefficients: int = 10,
    noise: float = 1.0,
    max_shift: int = 4,
    seed: int = 0,
    batch_size: int = 64,
    eval_samples: int | None = None,
    *,
    name: str = "keywords",
) -> ImageData:
    """Utterances x (N, frames, coefficients) float32 and keyword labels (the templates fixed by ``seed``)."""
    rng = np.random.default_rng(seed)
    templates = _templates(rng, num_classes, frames, coefficients)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, n)
        shifts = rng.integers(-max_shift, max_shift + 1, n)
        gains = rng.uniform(0.7, 1.3, n)[:, None, None]
        x = np.stack([np.roll(templates[k], s, axis=0) for k, s in zip(y, shifts)]) * gains
        return (x + noise * rng.standard_normal(x.shape)).astype(np.float32), y

    x_train, y_train = split(num_train)
    x_val, y_val = split(num_val)
    source = f"generated: {num_classes} keyword templates {frames}x{coefficients}, shift ±{max_shift}, noise {noise}, seed {seed}"
    return from_arrays(x_train, y_train, x_val, y_val, num_classes, batch_size, eval_samples, source=source)
