"""The domains: one package per family of worlds, each holding its scores, evaluation protocol, demo and pictures.

- `games`: pong, MinAtar and Gymnasium / ALE games (held-out episodes, decoded state, serves, agents);
- `epidemics`: cascades on networks (node forecasts, epidemic curves, hubs);
- `forecasting`: Lorenz-96 and fields (weather-centre scores, free runs, spectra);
- `markets`: daily returns (VaR backtests against GARCH peers, stylised facts, scenarios).

Each offers the one interface of `diffworld.domains.base.Domain`; `diffworld eval` and `diffworld
demo` find a world's domain here and call it. A new domain is a package with a `DOMAIN` and a
line in `DOMAIN_MODULES`; the command line does not change.
"""

from __future__ import annotations

import importlib

from diffworld.domains.base import DemoOptions, Domain, EvalOptions, check_options

#: The packages of the domains, each holding a `DOMAIN`; the first that serves a world is its domain.
DOMAIN_MODULES = (
    "diffworld.domains.games",
    "diffworld.domains.epidemics",
    "diffworld.domains.forecasting",
    "diffworld.domains.markets",
)


def domains() -> list[Domain]:
    """Every domain, in the order of DOMAIN_MODULES (each package imported on first use)."""
    return [importlib.import_module(name).DOMAIN for name in DOMAIN_MODULES]


def domain_of(world: str) -> Domain:
    """The domain that serves `world` (a checkpoint's spec name or a demo's --world), or a one-line ValueError."""
    for domain in domains():
        if domain.serves(world):
            return domain
    known = "; ".join(f"{d.name}: {', '.join(name for name, _ in d.worlds())}" for d in domains())
    raise ValueError(f"no domain serves world {world!r}; expected one of ({known})")


__all__ = ["DOMAIN_MODULES", "DemoOptions", "Domain", "EvalOptions", "check_options", "domain_of", "domains"]
