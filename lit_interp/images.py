"""Cheap heatmap images for the loggers (TensorBoard, W&B, MLflow): numpy only, with ticks and a labelled colour bar."""

from __future__ import annotations

import numpy as np
import torch

# 3x5 pixel glyphs, one string of 15 bits per character (rows top to bottom), enough for tick and bar labels.
GLYPHS = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001010010010",
    "8": "111101111101111",
    "9": "111101111001111",
    "-": "000000111000000",
    ".": "000000000000010",
    "e": "000111111100111",
    "+": "000010111010000",
    " ": "000000000000000",
}
# (position in [0, 1], red, green, blue) anchors of matplotlib's Blues and RdBu_r, interpolated linearly.
BLUES_ANCHORS = np.array(
    [[0, 247, 251, 255], [0.25, 198, 219, 239], [0.5, 107, 174, 214], [0.75, 33, 113, 181], [1, 8, 48, 107]]
)
RED_BLUE_ANCHORS = np.array(
    [[0, 5, 48, 97], [0.25, 67, 147, 195], [0.5, 247, 247, 247], [0.75, 214, 96, 77], [1, 103, 0, 31]]
)
GLYPH_SCALE = 2  # each glyph pixel drawn as 2x2 pixels
GAP, MARGIN, BAR_WIDTH = 6, 4, 12


def colourmap(anchors: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """`fraction` in [0, 1] -> uint8 RGB, linear between the anchors."""
    fraction = np.clip(np.nan_to_num(fraction, nan=0.5), 0, 1)
    return np.stack([np.interp(fraction, anchors[:, 0], anchors[:, i]) for i in (1, 2, 3)], axis=-1).astype(np.uint8)


def text_bitmap(text: str) -> np.ndarray:
    """A boolean `[height width]` bitmap of `text` (characters outside GLYPHS drawn as spaces)."""
    glyphs = [np.array([bit == "1" for bit in GLYPHS.get(char, GLYPHS[" "])]).reshape(5, 3) for char in text]
    spaced = [np.pad(glyph, ((0, 0), (0, 1))) for glyph in glyphs] or [np.zeros((5, 1), bool)]
    return np.kron(np.concatenate(spaced, axis=1), np.ones((GLYPH_SCALE, GLYPH_SCALE), bool))


def stamp(image: np.ndarray, text: str, row: int, column: int) -> None:
    """Draw `text` in black with its top-left corner at (row, column), clipped to the image."""
    bitmap = text_bitmap(text)
    if row < 0 or column < 0:
        bitmap = bitmap[max(0, -row) :, max(0, -column) :]
        row, column = max(0, row), max(0, column)
    height, width = min(bitmap.shape[0], image.shape[0] - row), min(bitmap.shape[1], image.shape[1] - column)
    if height > 0 and width > 0:
        image[row : row + height, column : column + width][bitmap[:height, :width]] = 0


def label(value: float) -> str:
    return f"{value:.2g}".replace("e+0", "e").replace("e-0", "e-")


def tick_every(length: int, scale: int) -> int:
    """Label every k-th row or column so labels (about 12 pixels) do not overlap."""
    return next(k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10**9) if k * scale >= 5 * GLYPH_SCALE + 2)


def heatmap_rgb(matrices: list[torch.Tensor], min_pixels: int = 160) -> np.ndarray:
    """Matrices side by side on one colour scale, as a `[height width 3]` uint8 image with ticks and a colour bar.

    Values in [0, 1] (attention patterns) use 'Blues' over exactly [0, 1]; anything signed or above 1
    a red-blue scale centred on 0 at +-max|value|. Row and column indices label the left and bottom
    edges; the colour bar on the right is labelled with its ends and middle.
    """
    values = [matrix.detach().float().cpu().numpy() for matrix in matrices]
    low = min(float(np.nanmin(v)) for v in values) if values else 0.0
    high = max(float(np.nanmax(v)) for v in values) if values else 1.0
    probability = 0 <= low and high <= 1
    bound = 1.0 if probability else max(abs(low), abs(high)) or 1.0
    anchors, bottom = (BLUES_ANCHORS, 0.0) if probability else (RED_BLUE_ANCHORS, -bound)
    to_colour = (
        (lambda v: colourmap(anchors, v)) if probability else (lambda v: colourmap(anchors, (v / bound + 1) / 2))
    )
    label_width = len(str(max(max(v.shape) for v in values) - 1)) * 4 * GLYPH_SCALE + 2 * MARGIN
    tiles = [tile(v, to_colour, min_pixels, label_width) for v in values]
    bar = colour_bar(max(t.shape[0] for t in tiles), to_colour, bottom, bound)
    height = max(t.shape[0] for t in [*tiles, bar])
    padded = [np.pad(t, ((0, height - t.shape[0]), (0, GAP), (0, 0)), constant_values=255) for t in [*tiles, bar]]
    return np.concatenate(padded, axis=1)


def tile(values: np.ndarray, to_colour, min_pixels: int, label_width: int) -> np.ndarray:
    """One matrix scaled up by integer factors, row ticks on its left and column ticks below it.

    Rows and columns are scaled separately, each to >= min_pixels: a [2 512] matrix gets rows 80 pixels
    high instead of 1, so it can be read and its labels fit.
    """
    rows, columns = values.shape
    row_scale, column_scale = (max(1, -(-min_pixels // side)) for side in values.shape)
    pixels = np.kron(to_colour(values), np.ones((row_scale, column_scale, 1), np.uint8))
    text_height = 5 * GLYPH_SCALE
    image = np.full(
        (MARGIN + pixels.shape[0] + MARGIN + text_height + MARGIN, label_width + pixels.shape[1] + MARGIN, 3),
        255,
        np.uint8,
    )
    image[MARGIN : MARGIN + pixels.shape[0], label_width : label_width + pixels.shape[1]] = pixels
    for row in range(0, rows, tick_every(rows, row_scale)):
        stamp(image, str(row), max(0, MARGIN + row * row_scale + (row_scale - text_height) // 2), 0)
    for column in range(0, columns, tick_every(columns, column_scale) * 2 if columns > 9 else 1):
        left = label_width + column * column_scale + column_scale // 2 - GLYPH_SCALE
        if left + len(str(column)) * 4 * GLYPH_SCALE <= image.shape[1]:  # a label cut by the edge would misread
            stamp(image, str(column), MARGIN + pixels.shape[0] + MARGIN, left)
    return image


def colour_bar(height: int, to_colour, bottom: float, top: float) -> np.ndarray:
    """A vertical gradient from `top` (upper end) to `bottom`, labelled at both ends and the middle."""
    inner = height - 2 * MARGIN - 5 * GLYPH_SCALE - MARGIN
    gradient = to_colour(np.linspace(top, bottom, inner)) if bottom < 0 else to_colour(np.linspace(1, 0, inner))
    labels = [label(top), label((top + bottom) / 2), label(bottom)]
    width = BAR_WIDTH + MARGIN + max(len(text) for text in labels) * 4 * GLYPH_SCALE
    image = np.full((height, width, 3), 255, np.uint8)
    image[MARGIN : MARGIN + inner, :BAR_WIDTH] = gradient[:, None, :]
    for text, row in zip(labels, (MARGIN, MARGIN + inner // 2 - GLYPH_SCALE * 2, MARGIN + inner - 5 * GLYPH_SCALE)):
        stamp(image, text, row, BAR_WIDTH + MARGIN)
    return image
