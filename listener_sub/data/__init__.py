"""Image sets for the game and the pretraining recipes: the embedded world, CLEVR-format scene folders, COCO-format
caption folders and plain folders of images, all behind one `DataSource.load(split, size) -> ImageSet`."""

from listener_sub.data.config import ATTRIBUTE_KINDS, KINDS, ROOT_SPLIT, DataConfig
from listener_sub.data.imageset import ImageSet
from listener_sub.data.source import DataSource
from listener_sub.data.store import StoredImages

__all__ = ["ATTRIBUTE_KINDS", "KINDS", "ROOT_SPLIT", "DataConfig", "DataSource", "ImageSet", "StoredImages"]
