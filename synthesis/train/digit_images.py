"""Digits 0–9 rendered from fonts that installed packages ship: the demo image model's data.

Fonts come from matplotlib's bundled TrueType files (DejaVu, STIX and Computer Modern faces) and
Pillow's built-in scalable font, so the data set is rebuilt offline, identically, on any machine
with the same package versions. Fonts are split into training fonts and HELD-OUT fonts; the demo
bank's natural images come only from held-out fonts, so the model never saw their glyph shapes.

Images are 32×32 grey, dark ink on a light background, values in [0, 1]. Augmentation: shifts,
scale, rotation, stroke width (thicker and thinner), contrast and pixel noise.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 32
_OVERSAMPLE = 4  # render at 128×128, then downsample: gives anti-aliased, sub-pixel strokes
_GLYPH_PX = 96


@dataclass(frozen=True)
class Font:
    """A font by short name; ``file`` is a matplotlib bundled TTF, or None for Pillow's built-in font."""

    name: str
    file: str | None


def _mpl(name: str) -> Font:
    return Font(name, name + ".ttf")


TRAIN_FONTS: tuple[Font, ...] = tuple(
    _mpl(n)
    for n in (
        "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-BoldOblique",
        "DejaVuSansMono", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
        "DejaVuSerif", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
        "STIXGeneral", "STIXGeneralBol", "STIXGeneralBolIta",
        "cmr10", "cmb10", "cmti10", "cmtt10", "cmmi10",
    )
)
HELDOUT_FONTS: tuple[Font, ...] = (
    _mpl("DejaVuSans-Oblique"),
    _mpl("DejaVuSerif-Bold"),
    _mpl("DejaVuSansMono-Bold"),
    _mpl("STIXGeneralItalic"),
    _mpl("cmss10"),
    Font("Pillow-Aileron", None),
)


@functools.lru_cache(maxsize=64)
def _load(font: Font) -> ImageFont.FreeTypeFont:
    if font.file is None:
        f = ImageFont.load_default(_GLYPH_PX)
        if not isinstance(f, ImageFont.FreeTypeFont):
            raise RuntimeError("Pillow was built without FreeType; the built-in scalable font is missing")
        return f
    import matplotlib

    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", font.file), _GLYPH_PX)


@dataclass(frozen=True)
class Style:
    """One rendering's geometry and appearance. Lengths are fractions of the image side."""

    height: float = 0.7  # glyph height
    dx: float = 0.0
    dy: float = 0.0
    angle: float = 0.0  # degrees, counter-clockwise
    stroke: int = 0  # >0 thickens by that many 128-px pixels, <0 thins
    background: float = 1.0
    ink: float = 0.0
    noise: float = 0.0  # SD of added Gaussian pixel noise


CLEAN = Style()


def random_style(rng: np.random.Generator, strength: float = 1.0) -> Style:
    """Training augmentation; ``strength`` < 1 gives milder variations (for the bank's natural images)."""
    s = strength
    return Style(
        height=float(rng.uniform(0.7 - 0.2 * s, 0.7 + 0.12 * s)),
        dx=float(rng.uniform(-0.12, 0.12) * s),
        dy=float(rng.uniform(-0.1, 0.1) * s),
        angle=float(rng.uniform(-15, 15) * s),
        stroke=int(rng.integers(-2, 5)) if rng.random() < 0.75 * s else 0,
        background=float(rng.uniform(1.0 - 0.25 * s, 1.0)),
        ink=float(rng.uniform(0.0, 0.3 * s)),
        noise=float(rng.uniform(0.0, 0.06 * s)) if rng.random() < 0.6 * s else 0.0,
    )


def render(digit: int, font: Font, style: Style = CLEAN, rng: np.random.Generator | None = None, size: int = SIZE) -> np.ndarray:
    """Render one digit as a (size, size) float32 image in [0, 1]."""
    f = _load(font)
    ch = str(digit)
    big = size * _OVERSAMPLE
    # Draw white ink on black, stroke widened if asked, then crop to the ink.
    pad = _GLYPH_PX
    canvas = Image.new("L", (3 * pad, 3 * pad), 0)
    ImageDraw.Draw(canvas).text((pad, pad), ch, font=f, fill=255, stroke_width=max(style.stroke, 0), stroke_fill=255)
    if style.stroke < 0:
        canvas = canvas.filter(ImageFilter.MinFilter(2 * (-style.stroke) + 1))
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"font {font.name} has no visible glyph for {ch!r}")
    glyph = canvas.crop(box)
    if style.angle:
        glyph = glyph.rotate(style.angle, resample=Image.Resampling.BICUBIC, expand=True)
        glyph = glyph.crop(glyph.getbbox() or (0, 0, glyph.width, glyph.height))
    gw, gh = glyph.size
    scale = style.height * big / gh
    if gw * scale > 0.9 * big:
        scale = 0.9 * big / gw
    nw, nh = max(1, round(gw * scale)), max(1, round(gh * scale))
    glyph = glyph.resize((nw, nh), Image.Resampling.LANCZOS)
    ink = Image.new("L", (big, big), 0)
    x0 = round((big - nw) / 2 + style.dx * big)
    y0 = round((big - nh) / 2 + style.dy * big)
    ink.paste(glyph, (x0, y0))
    small = np.asarray(ink.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0
    img = style.background + (style.ink - style.background) * small
    if style.noise > 0:
        r = rng if rng is not None else np.random.default_rng(0)
        img = img + r.normal(0.0, style.noise, img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def render_batch(n: int, fonts: Sequence[Font], *, seed: int, augment: bool = True, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random renderings (digits and fonts drawn uniformly): images (n, 32, 32) and labels (n,)."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, SIZE, SIZE), dtype=np.float32)
    labels = rng.integers(0, 10, size=n)
    font_idx = rng.integers(0, len(fonts), size=n)
    for i in range(n):
        style = random_style(rng, strength) if augment else CLEAN
        images[i] = render(int(labels[i]), fonts[int(font_idx[i])], style, rng)
    return images, labels.astype(np.int64)


def natural_digits(n: int, seed: int) -> np.ndarray:
    """The digit model's null signals (``natural_sampler``): ``n`` digits rendered from the
    *training* fonts with training augmentation, ``[n, 1, 32, 32]``."""
    images, _ = render_batch(n, TRAIN_FONTS, seed=seed, augment=True)
    return images[:, None]


# ----------------------------------------------------------------------------------------------
# Factories for the demo bank's plan (demo/plans/digits.yaml). Each returns plain arrays; the plan
# runner writes them as PNGs and works on the decoded (quantized) pixels from then on.


def bank_sources(per_digit: int = 6, seed: int = 1) -> list[tuple[str, str, np.ndarray]]:
    """Natural source images: ``per_digit`` per digit, each from a different HELD-OUT font, mildly varied."""
    if per_digit > len(HELDOUT_FONTS):
        raise ValueError(f"only {len(HELDOUT_FONTS)} held-out fonts")
    rng = np.random.default_rng(seed)
    out = []
    for d in range(10):
        for font in HELDOUT_FONTS[:per_digit]:
            out.append((f"d{d}-{font.name}", str(d), render(d, font, random_style(rng, 0.4), rng)))
    return out


PRACTICE_FONTS: tuple[Font, ...] = (_mpl("DejaVuSans"), _mpl("STIXGeneral"), _mpl("cmtt10"))


def practice(per_digit: int = 3, seed: int = 2) -> list[tuple[str, str, np.ndarray]]:
    """Practice images: natural renderings from fonts never used as sources (training fonts)."""
    rng = np.random.default_rng(seed)
    return [
        (f"d{d}-{PRACTICE_FONTS[k % len(PRACTICE_FONTS)].name}-{k}", str(d), render(d, PRACTICE_FONTS[k % len(PRACTICE_FONTS)], random_style(rng, 0.4), rng))
        for d in range(10)
        for k in range(per_digit)
    ]


ICON_FONT = _mpl("DejaVuSans-Bold")


def catch() -> list[tuple[str, str, np.ndarray]]:
    """Catch images: the clean, bold rendering of each digit that also serves as its icon."""
    return [(f"d{d}", str(d), render(d, ICON_FONT, CLEAN)) for d in range(10)]


def icons(size: int = 64) -> dict[str, np.ndarray]:
    """Response-button icons: a clean, bold rendering of each digit."""
    return {str(d): render(d, ICON_FONT, CLEAN, size=size) for d in range(10)}
