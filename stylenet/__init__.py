"""stylenet: fast feed-forward neural style transfer (Johnson et al. 2016).

`from stylenet import Stylizer` is the inference API; it is imported on first use so that
`import stylenet` alone stays cheap (no torch import).
"""

__all__ = ["Stylizer"]


def __getattr__(name: str):
    if name == "Stylizer":
        from stylenet.stylize import Stylizer

        return Stylizer
    raise AttributeError(f"module 'stylenet' has no attribute {name!r}")
