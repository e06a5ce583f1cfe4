"""The inference pipeline: prompt (+ source image, + session) -> visual tokens -> pixels.

A ``Pipeline`` holds the three trained stages as (Flax module, host params) pairs and the
text tokenizer; it never reads a training workdir (``Pipeline.from_run`` builds one from
an ``omni_img.stages.run.TrainedRun``: ``omni_img.export.load_bundle`` from a bundle,
``omni_img.export.pipeline_from_workdirs`` from training state).

    prompt ──► conditioning ──► AR sampler ──► tokens (h, w) ──► decoder ──► uint8 image
               (text, source tokens,                            rolling | sequential | conv
                session history)

Decoders: ``rolling`` and ``sequential`` are the band-wise diffusion decoder's two sampling
modes (``omni_img.sampling.rolling``), conditioned on the tokens and on the generator
encoder's E for the same conditioning, as in training; ``conv`` is the tokenizer's own
conv decoder (the fast baseline).

Randomness: ``seed`` -> ``PRNGKey(seed)`` split into (AR key, decoder key), so a seed fixes
the image, and ``stream`` gives the image ``generate`` gives (up to float rounding between
differently fused XLA programs, see ``sampling/rolling.py``).

Streaming: ``stream`` feeds ``ar.stream_rows`` into ``rolling.stream``. Both are lazy, so
a token row is sampled only when a band needs it: band g starts once the rows covering it
(plus the decoder's look-ahead) exist, and the first band is out before the last row is.

Shape letters: B batch, H×W image, h×w token grid, S encoder length, D encoder width.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from omni_img.compilation import StoredJit
from omni_img.errors import UserError
from omni_img.models import tokenizer as tokenizer_model
from omni_img.models.bands import RollingDecoderConfig
from omni_img.models.generator import Generator
from omni_img.models.tokenizer import Tokenizer, to_uint8
from omni_img.sampling import ar
from omni_img.sampling import rolling as rolling_sampling
from omni_img.sampling.ar import DEFAULT_SAMPLING, SamplingConfig
from omni_img.sampling.session import (
    Session,
    check_token_grid,
    edit_conditioning,
    prepare_image,
)
from omni_img.text.tokenizer import TextTokenizer

DECODERS = ("rolling", "sequential", "conv")
# Source images: refuse what is surely not a photo to edit before decoding any pixel.
MAX_SOURCE_PIXELS = 64_000_000  # e.g. 8000×8000
MIN_SOURCE_SIDE = 8


def check_decoder(decoder: str) -> str:
    """The decoder name, or a UserError listing the choices."""
    if decoder not in DECODERS:
        raise UserError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    return decoder


def read_image(
    path: Any,
    *,
    max_pixels: int = MAX_SOURCE_PIXELS,
    min_side: int = MIN_SOURCE_SIDE,
    name: str | None = None,
) -> np.ndarray:
    """An image file (a path, or a binary file object called ``name`` in the messages) as
    uint8 (H, W, 3); every problem is a one-line UserError.

    The size is checked from the header before any pixel is decoded (a 20000×20000 PNG
    of a few bytes is refused at once). CMYK is refused rather than guessed at; grey,
    palette and alpha images become RGB (alpha over white).
    """
    from PIL import Image, UnidentifiedImageError

    label = name or path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise UserError(f"image {label}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"image {label} is a directory, not an image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"image {label} is too large (over {max_pixels} pixels)") from None
    except UnidentifiedImageError:
        raise UserError(f"image {label} is not an image file PIL can read (corrupt?)") from None
    except OSError as error:
        raise UserError(f"cannot read image {label}: {error.strerror or error}") from None
    with image:
        w, h = image.size
        if w * h > max_pixels:
            raise UserError(f"image {label} is {w}x{h}, too large (over {max_pixels} pixels)")
        if min(w, h) < min_side:
            raise UserError(f"image {label} is {w}x{h}, too small (sides under {min_side} px)")
        if image.mode == "CMYK":
            raise UserError(f"image {label} is CMYK; convert it to RGB first")
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise UserError(f"image {label} is corrupt or truncated ({error})") from None
        return prepare_image(image)[0]


# ----------------------------------------------------------------------------- jitted stages


# The serving path's entry points: their executables may persist across processes.
# Each is called f(module, params, *arrays); export lowers them for its bundles.


def _tokenize_fn(params, images_BxHxWx3, *, model: Tokenizer):
    return tokenizer_model.encode(model, params, images_BxHxWx3)


def _conv_decode_fn(params, tokens_Bxhxw, *, model: Tokenizer):
    return jnp.clip(tokenizer_model.decode(model, params, tokens_Bxhxw), -1.0, 1.0)


def _embed_fn(params, cond, *, model: Generator):
    return model.apply({"params": params}, cond, method="encode")


def _stored(fn: Callable, name: str) -> Callable:
    """fn(*arrays, model=...) jitted with `model` static and its executables stored, called
    as f(model, *arrays)."""
    stored = StoredJit(jax.jit(fn, static_argnames="model"), name)
    return lambda model, *arrays: stored(*arrays, model=model)


tokenize_images = _stored(_tokenize_fn, "tokenize")  # uint8 images -> token ids
conv_decode = _stored(_conv_decode_fn, "conv_decode")  # token ids -> images in [-1, 1]
text_embed = _stored(_embed_fn, "text_embed")  # conditioning -> (E, its mask)


def _split_seed_fn(seed_uint32):
    ar_key, decoder_key = jax.random.split(jax.random.PRNGKey(seed_uint32))
    return ar_key, decoder_key


# One stored program: eager PRNGKey and split would trace, lower and compile three small
# ones in every new process (seconds of a warm `omni-img generate`, for two keys).
_split_seed = StoredJit(jax.jit(_split_seed_fn), "split_seed")


def split_seed(seed: int) -> tuple[jax.Array, jax.Array]:
    """(AR key, decoder key) of a seed: those of ``jax.random.split(PRNGKey(seed))``."""
    if not isinstance(seed, int | np.integer) or not 0 <= int(seed) < 2**32:
        raise UserError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return _split_seed(np.uint32(seed))


@dataclasses.dataclass
class Pipeline:
    """The three stages and the text tokenizer, ready to sample (see module docstring).

    tokenizer_params / generator_params: the modules' ``params`` collections;
    rolling_params: the rolling decoder's variables (``{"params": ...}``).
    """

    tokenizer: Tokenizer
    tokenizer_params: Any
    generator: Generator
    generator_params: Any
    text_tokenizer: TextTokenizer
    rolling_cfg: RollingDecoderConfig
    rolling_params: Any

    @classmethod
    def from_run(cls, run) -> Pipeline:
        """The pipeline of a ``omni_img.stages.run.TrainedRun`` (which needs its rolling
        decoder); its configs stay behind."""
        return cls(
            tokenizer=run.tokenizer,
            tokenizer_params=run.tokenizer_params,
            generator=run.generator,
            generator_params=run.generator_params,
            text_tokenizer=run.text_tokenizer,
            rolling_cfg=run.rolling_cfg,
            rolling_params=run.rolling_params,
        )

    def __post_init__(self):
        spec, gcfg, rcfg = self.tokenizer.spec, self.generator.cfg, self.rolling_cfg
        grid = (spec.grid_size, spec.grid_size)
        checks = [
            (tuple(gcfg.grid) == grid, f"generator grid {gcfg.grid} != tokenizer grid {grid}"),
            (
                (rcfg.token_rows, rcfg.token_cols) == grid,
                f"rolling decoder grid {(rcfg.token_rows, rcfg.token_cols)} != {grid}",
            ),
            (
                (rcfg.image_height, rcfg.image_width) == (spec.image_size, spec.image_size),
                f"rolling decoder images {rcfg.image_height}x{rcfg.image_width} != tokenizer "
                f"images {spec.image_size}x{spec.image_size}",
            ),
            (rcfg.text_dim == gcfg.dim, f"rolling text_dim {rcfg.text_dim} != encoder {gcfg.dim}"),
            (
                gcfg.image_vocab_size == spec.num_codes,
                f"generator vocabulary {gcfg.image_vocab_size} != tokenizer codes {spec.num_codes}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"inconsistent stages: {message}")
        # Params live on the device once, not re-sent from host memory on every call.
        self.tokenizer_params = jax.device_put(self.tokenizer_params)
        self.generator_params = jax.device_put(self.generator_params)
        self.rolling_params = jax.device_put(self.rolling_params)

    # ---- sizes

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images the bundle makes and edits."""
        return (self.rolling_cfg.image_height, self.rolling_cfg.image_width)

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.generator.cfg.grid)

    # ---- conditioning

    def encode_image(self, image: Any) -> np.ndarray:
        """A source image (uint8 (H, W, 3) or PIL; resized to the bundle's size) -> (1, h, w)."""
        images = prepare_image(image, self.image_size, resize=True)
        if images.shape[0] != 1:
            raise UserError(f"one source image at a time, got {images.shape[0]}")
        tokens = np.asarray(tokenize_images(self.tokenizer, self.tokenizer_params, images))
        return check_token_grid(tokens, self.grid, self.generator.cfg.image_vocab_size)

    def reconstruct(self, images: Any) -> np.ndarray:
        """The tokenizer's round trip: images uint8 (B, H, W, 3) (or one (H, W, 3); resized to
        the bundle's size) -> encode -> conv decode -> uint8 (B, H, W, 3)."""
        images = prepare_image(images, self.image_size, resize=True)
        tokens = tokenize_images(self.tokenizer, self.tokenizer_params, images)
        return to_uint8(conv_decode(self.tokenizer, self.tokenizer_params, tokens))

    def new_session(self, source_image: Any = None) -> Session:
        """An empty multi-turn session for this model (optionally from a start image)."""
        source = None if source_image is None else self.encode_image(source_image)
        return Session.for_model(self.generator.cfg, self.text_tokenizer, source)

    def check_session(self, session: Session) -> None:
        """UserError if ``session`` was made for another model."""
        cfg = self.generator.cfg
        mine = (
            tuple(cfg.grid),
            cfg.max_text_len,
            cfg.max_history_len,
            cfg.image_vocab_size,
            self.text_tokenizer.to_json(),
        )
        theirs = (
            tuple(session.grid),
            session.max_text_len,
            session.max_history_len,
            session.image_vocab_size,
            session.tokenizer.to_json(),
        )
        if mine != theirs:
            raise UserError("the session was made with a different model; start a new one")

    def conditioning(
        self, prompt: str | bytes, *, source_image: Any = None, session: Session | None = None
    ) -> dict[str, np.ndarray]:
        """The generator's batch-of-one conditioning dict for a prompt.

        With a session: its history and last image; ``source_image`` may only start a
        session that has no image yet. Without: the prompt and the optional source image.
        """
        if session is None:
            source = None if source_image is None else self.encode_image(source_image)
            return edit_conditioning(self.text_tokenizer, prompt, self.generator.cfg, source)
        self.check_session(session)
        if source_image is not None:
            if session.last_image() is not None:
                raise UserError("the session already has an image; continue without a new one")
            session.source_tokens = self.encode_image(source_image)[0]
        return session.conditioning(prompt)

    # ---- the stages

    def sample_tokens(
        self, cond: Mapping[str, Any], seed: int, sampling: SamplingConfig = DEFAULT_SAMPLING
    ) -> np.ndarray:
        """Token grid (1, h, w) int32 for a conditioning dict (one jitted call)."""
        ar_key, _ = split_seed(seed)
        return np.asarray(ar.sample(self.generator, self.generator_params, cond, ar_key, sampling))

    def text_embeddings(self, cond: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
        """E (1, S, D) and its mask (1, S): what the rolling decoder cross-attends to."""
        # Host arrays go in as they are: jnp.asarray would compile a copy program per shape.
        return text_embed(self.generator, self.generator_params, dict(cond))

    def decode(
        self, tokens: Any, cond: Mapping[str, Any], seed: int, decoder: str = "rolling"
    ) -> np.ndarray:
        """Tokens (1, h, w) -> uint8 image (H, W, 3) with the named decoder."""
        check_decoder(decoder)
        tokens = check_token_grid(tokens, self.grid)  # host int32: jnp.asarray would compile
        if decoder == "conv":
            return to_uint8(conv_decode(self.tokenizer, self.tokenizer_params, tokens))[0]
        _, decoder_key = split_seed(seed)
        e, mask = self.text_embeddings(cond)
        image, _ = rolling_sampling.sample(
            self.rolling_params, self.rolling_cfg, tokens, e, mask, decoder_key, mode=decoder
        )
        return to_uint8(image)[0]

    # ---- end to end

    def generate(
        self,
        prompt: str | bytes,
        *,
        seed: int = 0,
        decoder: str = "rolling",
        source_image: Any = None,
        session: Session | None = None,
        sampling: SamplingConfig = DEFAULT_SAMPLING,
        timings: dict[str, float] | None = None,
    ) -> np.ndarray:
        """Prompt (+ source image / session) -> uint8 image (H, W, 3).

        With a session, the turn (prompt, tokens) is recorded in it. ``timings``, if
        given, receives the wall seconds of "tokens" and "decode" (compilation included).
        """
        check_decoder(decoder)
        timings = {} if timings is None else timings
        start = time.perf_counter()
        cond = self.conditioning(prompt, source_image=source_image, session=session)
        tokens = self.sample_tokens(cond, seed, sampling)
        timings["tokens"] = time.perf_counter() - start
        start = time.perf_counter()
        image = self.decode(tokens, cond, seed, decoder)
        timings["decode"] = time.perf_counter() - start
        if session is not None:
            session.add_turn(prompt, tokens)
        return image

    def stream(
        self,
        prompt: str | bytes,
        *,
        seed: int = 0,
        decoder: str = "rolling",
        source_image: Any = None,
        session: Session | None = None,
        sampling: SamplingConfig = DEFAULT_SAMPLING,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (band g, uint8 image (H, W, 3) so far) as each band becomes clean.

        Bands below g are mid-grey (128, the decoder's 0). Token rows are sampled only as
        the bands need them. The conv decoder needs every row, so it yields once: (0, the
        whole image).
        """
        check_decoder(decoder)
        cond = self.conditioning(prompt, source_image=source_image, session=session)
        ar_key, decoder_key = split_seed(seed)
        rows: list[np.ndarray] = []

        def token_rows():
            stream = ar.stream_rows(self.generator, self.generator_params, cond, ar_key, sampling)
            for row, tokens_Bxw in stream:
                rows.append(tokens_Bxw)
                yield row, tokens_Bxw

        if decoder == "conv":
            for _ in token_rows():
                pass
            tokens = np.stack(rows, axis=1)
            yield 0, self.decode(tokens, cond, seed, "conv")
        else:
            e, mask = self.text_embeddings(cond)
            bands = rolling_sampling.stream(
                self.rolling_params,
                self.rolling_cfg,
                token_rows(),
                e,
                mask,
                decoder_key,
                mode=decoder,
            )
            for band, image in bands:
                yield band, to_uint8(image)[0]
            tokens = np.stack(rows, axis=1)
        if session is not None:
            session.add_turn(prompt, tokens)

    def timed_stream(
        self, prompt: str | bytes, **kwargs
    ) -> Iterator[tuple[int, np.ndarray, float]]:
        """``stream`` with the seconds since the call when each band landed."""
        start = time.perf_counter()
        for band, image in self.stream(prompt, **kwargs):
            yield band, image, time.perf_counter() - start
