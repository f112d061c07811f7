"""File formats at the project's borders: KNOSSOS annotations and datasets, SWC."""
