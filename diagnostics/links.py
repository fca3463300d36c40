"""What a Lab link asks for: a config, and optionally a lesson, its variant, a stored run, autorun.

The page URL is the share link, so reading one must never fail: each bad part is reported in plain words and
replaced by what it would have been without it (a bad field → that lesson's or run's config, or the defaults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import urlencode

from . import budget
from .config import EXTRA_QUERY_KEYS, ConfigError, RunConfig
from .lessons import Lesson, lesson as find_lesson, variant_index
from .runid import parse_run_id


@dataclass(frozen=True)
class Link:
    config: RunConfig
    lesson: Lesson | None = None
    variant: int = 0
    run_id: int | None = None
    autorun: bool = False
    problems: tuple[str, ...] = ()

    def query(self, config: RunConfig) -> dict[str, str]:
        """The query parameters that reopen this link with `config` (what the controls hold now)."""
        extra = {}
        if self.lesson is not None:
            extra = {"lesson": self.lesson.slug, "variant": str(self.variant)}
        if self.run_id is not None:
            extra["run"] = str(self.run_id)
        return {k: str(v) for k, v in config.to_dict().items()} | extra

    def share_params(self, config: RunConfig) -> dict[str, str]:
        """The query parameters of a link that replays this experiment for anyone and starts it: `config` and the
        lesson if any (a stored run's id is left out: the link trains the same run anew)."""
        params = {k: v for k, v in self.query(config).items() if k != "run"}
        return params | {"autorun": "1"}

    def share_query(self, config: RunConfig) -> str:
        return urlencode(self.share_params(config))


def share_params(lesson: Lesson, variant_index: int = 0) -> dict[str, str]:
    """The query parameters that open the lab on this lesson variant and start it: its full config plus the
    lesson keys."""
    if not 0 <= variant_index < len(lesson.variants):
        raise IndexError(f"lesson {lesson.slug!r} has variants 0 to {len(lesson.variants) - 1}, not {variant_index}")
    config = lesson.variants[variant_index].config
    return Link(config, lesson, variant_index).share_params(config)


def share_query(lesson: Lesson, variant_index: int = 0) -> str:
    """`share_params` as a URL query."""
    return urlencode(share_params(lesson, variant_index))


def parse_link(params: Mapping[str, str], stored_config: Callable[[int], dict]) -> Link:
    """Read a link's query parameters; `stored_config(run_id)` gives a stored run's config or raises
    LookupError with the reason. Fields in the link override the lesson's or the stored run's config."""
    problems = []
    base, chosen, variant, run_id = RunConfig(), None, 0, None
    if "lesson" in params:
        try:
            chosen = find_lesson(params["lesson"])
            variant = variant_index(chosen, params.get("variant"))
            base = chosen.variants[variant].config
        except ValueError as e:
            problems.append(f"{e}; the Lab opens without a lesson")
            chosen, variant = None, 0
    if "run" in params:
        try:
            run_id = parse_run_id(params["run"])
        except ValueError as e:
            problems.append(f"{e}; no run is shown")
        else:
            try:
                base = RunConfig.from_dict(stored_config(run_id))
            except (LookupError, ConfigError) as e:
                problems.append(f"run {run_id} cannot be opened: {e}; no run is shown")
                run_id = None
    fields = {k: v for k, v in params.items() if k not in EXTRA_QUERY_KEYS}
    config = base
    try:
        config = RunConfig.from_dict({**base.to_dict(), **fields})
    except ConfigError as e:
        source = "the lesson's" if chosen else "the stored run's" if run_id is not None else "the default"
        problems.append(f"the link's settings could not be used ({e}); the Lab shows {source} settings instead")
    if run_id is None and (too_big := budget.too_big(config)) is not None:
        problems.append(f"the link's settings are shown, but {too_big}")
    autorun = params.get("autorun") == "1" and not problems and run_id is None
    return Link(config, chosen, variant, run_id, autorun, tuple(problems))
