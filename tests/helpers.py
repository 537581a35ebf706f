"""Small test helpers."""


class FakeClock:
    """A clock that moves only when told, for exact energy arithmetic."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
