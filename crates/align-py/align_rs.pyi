"""ALIGN (kakaobrain/align-base) image and text embeddings and zero-shot classification on the
burn framework: the `align` command line's code as a Python module."""

import os
from typing import Any, Dict, Iterable, List, Literal, Protocol, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str
#: Backends compiled into this package (``device=`` accepts these and ``"auto"``).
DEVICES: List[str]

class _PILImage(Protocol):
    """What is used of a PIL image (PIL is not a dependency)."""

    mode: str
    size: Tuple[int, int]
    def convert(self, mode: str) -> Any: ...
    def tobytes(self) -> bytes: ...

#: One image: a path, an encoded file (JPEG, PNG, WebP, GIF, BMP, TIFF), a PIL image (its
#: ``convert("RGB")`` pixels) or an HxWx3 uint8 RGB array.
Image = Union[str, "os.PathLike[str]", bytes, bytearray, npt.NDArray[np.uint8], _PILImage]

class Align:
    """ALIGN with its image processor and tokenizer, on burn.

    Every method takes lists and returns NumPy arrays; embeddings are float32, L2-normalised,
    one row per input in input order, equal to what the ``align`` command line writes for the
    same inputs. Methods release the GIL while they compute and may be called from several
    threads at once.
    """

    @staticmethod
    def from_pretrained(
        name_or_dir: Union[str, "os.PathLike[str]"],
        device: str = "auto",
        dtype: Literal["f32", "f16"] = "f32",
    ) -> "Align":
        """Loads a model from a directory (a Hugging Face checkpoint or one written by
        ``align convert-weights``) or a hub model id such as ``"kakaobrain/align-base"`` (from
        the hub cache, downloaded into it unless ``HF_HUB_OFFLINE`` is set).

        ``device``: ``"auto"`` (``BURN_DEVICE`` if set, else flex) or ``"flex"``.
        Raises FileNotFoundError (missing directory or file), OSError (hub), ValueError (bad
        device or dtype), RuntimeError (broken checkpoint). The vision weights are packed
        for the CPU by the first image call, so a model used for texts alone never holds
        that copy."""
        ...
    @property
    def dim(self) -> int:
        """Embedding size (the model's projection_dim; 640 for align-base)."""
        ...
    @property
    def device(self) -> str:
        """The burn backend the model runs on."""
        ...
    def decode(self, images: Iterable[Image]) -> List[npt.NDArray[np.uint8]]:
        """The RGB pixels the processor decodes from each image, uint8 [H, W, 3] arrays in
        list order (EXIF orientation applied). ``embed_images`` on these arrays gives the same
        embeddings as on the images. Raises as ``embed_images`` does."""
        ...
    def embed_images(
        self, images: Iterable[Image], batch_size: Union[int, None] = None
    ) -> npt.NDArray[np.float32]:
        """L2-normalised image embeddings, float32 [N, dim]. Files are decoded as the
        processor decodes them (EXIF orientation applied); ``batch_size`` images per forward
        pass (default 8). Raises FileNotFoundError for a missing file, ValueError for an
        undecodable image or a bad array, TypeError for anything else."""
        ...
    def embed_texts(self, texts: List[str]) -> npt.NDArray[np.float32]:
        """L2-normalised text embeddings, float32 [N, dim] (texts over 64 tokens truncated,
        keeping [SEP] last)."""
        ...
    def zero_shot(
        self,
        images: Iterable[Image],
        labels: List[str],
        batch_size: Union[int, None] = None,
    ) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Zero-shot classification: ``(logits, probs)``, float32 [N images, K labels] each;
        logits = cosine similarity / temperature, probs = softmax over the labels."""
        ...
    def preprocess(self, images: Iterable[Image]) -> npt.NDArray[np.float32]:
        """The pixel values the model sees, float32 [N, 3, H, W] (AlignProcessor's
        ``pixel_values``; 289x289 for align-base)."""
        ...
    def tokenize(self, texts: List[str]) -> Dict[str, npt.NDArray[np.int64]]:
        """AlignProcessor's token arrays, int64 [N, 64] each: ``input_ids``,
        ``attention_mask``, ``token_type_ids``."""
        ...
