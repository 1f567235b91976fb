"""Encoding, decoding and sniffing of bank media files (PNG images, WAV audio). Torch-free.

Banks hold exactly two media types so that every browser can show them without transcoding:

* images: 8-bit PNG (grey, RGB or RGBA), values in [0, 1] mapped to 0..255;
* audio: 16-bit PCM WAV (mono or stereo), values in [-1, 1] mapped to ±32767.

Synthesis evaluates the validity criteria on the *quantized* signal that these encoders produce,
because that is what participants see and hear.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Bounds that any sensible stimulus respects; larger files are almost surely mistakes or attacks.
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_AUDIO_SECONDS = 60.0

MediaKind = Literal["image", "audio"]
EXTENSIONS: dict[str, MediaKind] = {".png": "image", ".wav": "audio"}
MIME_TYPES: dict[str, str] = {".png": "image/png", ".wav": "audio/wav"}


class MediaError(ValueError):
    """A file is not the media type it claims to be, or is out of bounds."""


@dataclass(frozen=True)
class MediaInfo:
    """What a media file really is, read from its content (not its name)."""

    kind: MediaKind
    ext: str
    mime: str
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    sample_rate: int | None = None
    frames: int | None = None

    @property
    def duration_s(self) -> float | None:
        if self.sample_rate and self.frames is not None:
            return self.frames / self.sample_rate
        return None


def media_kind_for(path: str) -> MediaKind | None:
    """The media kind implied by a file name's extension, or None if banks do not allow it."""
    for ext, kind in EXTENSIONS.items():
        if path.lower().endswith(ext):
            return kind
    return None


def sniff(data: bytes, ext: str) -> MediaInfo:
    """Decode the header of ``data`` and check it matches the extension ``ext`` (".png" or ".wav").

    Raises MediaError with a human-readable reason when the content is not a valid file of that type.
    """
    ext = ext.lower()
    if ext == ".png":
        return _sniff_png(data)
    if ext == ".wav":
        return _sniff_wav(data)
    raise MediaError(f"unsupported media extension {ext!r} (banks hold .png images and .wav audio)")


def _sniff_png(data: bytes) -> MediaInfo:
    from PIL import Image

    if not data.startswith(PNG_MAGIC):
        raise MediaError("not a PNG file (wrong signature)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise MediaError(f"image is {width}x{height}, larger than {MAX_IMAGE_PIXELS} pixels")
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # verify() skips pixel data; load() catches truncated files
            mode = im.mode
    except MediaError:
        raise
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise MediaError(f"corrupt PNG: {exc}") from exc
    # The IEND chunk (empty, fixed CRC) must be the last bytes: anything after it is not image
    # data, and is how image/HTML polyglots are made.
    if not data.endswith(b"\x00\x00\x00\x00IEND\xaeB`\x82"):
        raise MediaError("not a plain PNG file (data after the end of the image, or no IEND chunk at the end)")
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "P": 3, "I;16": 1, "I": 1, "1": 1}.get(mode, 3)
    return MediaInfo("image", ".png", MIME_TYPES[".png"], width=width, height=height, channels=channels)


def _sniff_wav(data: bytes) -> MediaInfo:
    import soundfile as sf

    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MediaError("not a WAV file (missing RIFF/WAVE header)")
    declared = _wav_data_chunk_size(data)
    if declared is None:
        raise MediaError("corrupt WAV: no data chunk")
    if declared[1] > len(data):
        raise MediaError(f"truncated WAV: data chunk declares {declared[0]} bytes, file holds {len(data) - (declared[1] - declared[0])}")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:
        raise MediaError(f"corrupt WAV: {exc}") from exc
    if info.frames <= 0:
        raise MediaError("WAV file holds no samples")
    if info.channels not in (1, 2):
        raise MediaError(f"WAV has {info.channels} channels; banks hold mono or stereo audio")
    if info.frames / info.samplerate > MAX_AUDIO_SECONDS:
        raise MediaError(f"WAV lasts {info.frames / info.samplerate:.1f} s, over {MAX_AUDIO_SECONDS:.0f} s")
    # Check the declared length is really present: a truncated file decodes to fewer frames.
    try:
        samples, _ = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except Exception as exc:
        raise MediaError(f"corrupt WAV: {exc}") from exc
    if samples.shape[0] != info.frames:
        raise MediaError(f"truncated WAV: header says {info.frames} frames, file holds {samples.shape[0]}")
    return MediaInfo(
        "audio",
        ".wav",
        MIME_TYPES[".wav"],
        channels=info.channels,
        sample_rate=info.samplerate,
        frames=info.frames,
    )


def _wav_data_chunk_size(data: bytes) -> tuple[int, int] | None:
    """Walk the RIFF chunks; return (declared size of the data chunk, offset where it should end)."""
    pos = 12
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if cid == b"data":
            return size, pos + 8 + size
        pos += 8 + size + (size & 1)
    return None


def encode_png(image: np.ndarray) -> bytes:
    """Encode an image in [0, 1] as an 8-bit PNG.

    ``image`` is (H, W) grey, (H, W, C) or (C, H, W) with C in {1, 3, 4}. Values are clipped to
    [0, 1] and rounded to the nearest of 256 levels.
    """
    from PIL import Image

    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"cannot encode an array of shape {image.shape} as an image")
    if not np.all(np.isfinite(arr)):
        raise ValueError("image holds NaN or infinite values")
    u8 = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """Decode a PNG to float32 in [0, 1], shape (H, W) for grey or (H, W, C) for colour."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ("L", "RGB", "RGBA"):
            im = im.convert("RGBA" if "A" in im.mode else "RGB")
        arr = np.asarray(im, dtype=np.float32) / 255.0
    return arr


def encode_wav(wave: np.ndarray, sample_rate: int) -> bytes:
    """Encode a waveform in [-1, 1] as 16-bit PCM WAV.

    ``wave`` is (n,) mono or (n, 2) stereo. Values are clipped to [-1, 1] first; without the clip,
    libsndfile would wrap out-of-range samples around.
    """
    import soundfile as sf

    arr = np.asarray(wave, dtype=np.float64)
    if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] not in (1, 2)):
        raise ValueError(f"cannot encode an array of shape {arr.shape} as audio (want (n,) or (n, 2))")
    if not np.all(np.isfinite(arr)):
        raise ValueError("waveform holds NaN or infinite values")
    pcm = np.round(np.clip(arr, -1.0, 1.0) * 32767.0).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, int(sample_rate), subtype="PCM_16", format="WAV")
    return buf.getvalue()


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a WAV to float32 in [-1, 1] and its sample rate (Hz). Mono files give shape (n,)."""
    import soundfile as sf

    pcm, sr = sf.read(io.BytesIO(data), dtype="int16", always_2d=False)
    return pcm.astype(np.float32) / 32767.0, int(sr)
