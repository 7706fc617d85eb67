"""autoseg as a network service: uploads in, segmentations and reports out (``autoseg serve``)."""
