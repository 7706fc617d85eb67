"""autoseg: self-configuring medical image segmentation for CT and MRI."""

__version__ = "0.1.0"
