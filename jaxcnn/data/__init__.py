"""Data: image files and sample photos (data sets and augmentation come with the training engine)."""

from jaxcnn.data.image_io import center_crop, load_image, resize_shorter, sample_photos

__all__ = ["center_crop", "load_image", "resize_shorter", "sample_photos"]
