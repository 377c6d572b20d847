"""The error every loader of model weights raises (compress.checkpoint, the model families)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason and what to do instead."""
