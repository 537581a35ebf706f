"""Small test helpers."""

import sys

from ray.tune.search import Searcher


class FakeClock:
    """A clock that moves only when told, for exact energy arithmetic."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class ScriptedSearch(Searcher):
    """Suggests the given configurations in order and remembers what it was told."""

    def __init__(self, configs: list[dict]) -> None:
        super().__init__(metric="accuracy", mode="max")
        self.configs = list(configs)
        self.told: list[tuple[dict | None, bool]] = []

    def suggest(self, trial_id: str) -> dict | str:
        return dict(self.configs.pop(0)) if self.configs else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.told.append((result, error))

    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass


class Counting(Searcher):
    def __init__(self) -> None:
        super().__init__(metric="accuracy", mode="max")
        self.suggested = 0
        self.told: list[tuple[str, dict | None, bool]] = []

    def suggest(self, trial_id: str) -> dict:
        self.suggested += 1
        return {"lr": 0.001 * self.suggested}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.told.append((trial_id, result, error))


def run_main(monkeypatch, *argv: str) -> int:
    """`greenray ARGV` through the console script's entry point, in this process; its exit code."""
    from greenray.cli import main

    monkeypatch.setattr(sys, "argv", ["greenray", *argv])
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0
