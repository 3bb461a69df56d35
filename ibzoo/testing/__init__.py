"""Test helpers that ship with ibzoo: a local Hugging Face Hub for the test suite and the offline demo."""

__all__ = ["LocalHub"]


def __getattr__(name: str) -> type:
    # Imported on first use rather than here, so that `python -m ibzoo.testing.local_hub` does not find
    # its own module already imported (runpy warns about that).
    if name == "LocalHub":
        from ibzoo.testing.local_hub import LocalHub

        return LocalHub
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
