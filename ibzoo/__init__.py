"""ibzoo: self-supervised image encoders whose projection heads are information bottlenecks."""

from ibzoo.version import __version__

__all__ = ["__version__"]
