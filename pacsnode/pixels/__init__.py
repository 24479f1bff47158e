"""Pixel Data decoding (pydicom-identical arrays over the native kernels) and transcoding."""
from pacsnode.pixels.decode import (
    PixelDescription,
    decode_dataset,
    decode_pixel_data,
    pixel_array,
    transcode_to_explicit_le,
)

__all__ = ["PixelDescription", "decode_dataset", "decode_pixel_data", "pixel_array", "transcode_to_explicit_le"]
