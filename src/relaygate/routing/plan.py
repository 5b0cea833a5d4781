"""A route config compiled into a tree of strategy nodes, once per config load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relaygate.config.models import DEFAULT_FALLBACK_CODES, Condition, RouteConfig, TargetConfig


@dataclass(frozen=True, slots=True)
class Leaf:
    provider: str
    model: str
    override_params: dict[str, Any] = field(default_factory=dict)
    credential: str | None = None
    name: str | None = None

    @property
    def key(self) -> str:
        """The breaker and metrics identity of this target."""
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class Group:
    mode: str
    children: tuple[Node, ...]
    weights: tuple[float, ...]
    on_status_codes: frozenset[int]
    conditions: tuple[Condition, ...] = ()
    default: str | None = None
    names: tuple[str | None, ...] = ()


Node = Leaf | Group


def compile_targets(targets: list[TargetConfig], mode: str, codes: list[int],
                    conditions: list[Condition], default: str | None) -> Group:
    children: list[Node] = []
    for t in targets:
        if t.targets is not None:
            s = t.strategy
            children.append(
                compile_targets(t.targets, s.mode if s else "fallback", s.on_status_codes if s else DEFAULT_FALLBACK_CODES,
                                s.conditions if s else [], s.default if s else None)
            )
        else:
            assert t.provider is not None
            children.append(Leaf(t.provider, t.model or "mock-1", dict(t.override_params), t.virtual_key, t.name))
    return Group(
        mode=mode,
        children=tuple(children),
        weights=tuple(t.weight for t in targets),
        on_status_codes=frozenset(codes),
        conditions=tuple(conditions),
        default=default,
        names=tuple(t.name for t in targets),
    )


def compile_route(route: RouteConfig) -> Group:
    s = route.strategy
    return compile_targets(route.targets, s.mode, s.on_status_codes, s.conditions, s.default)


def first_leaf(node: Node) -> Leaf:
    """The target a request is meant for when nothing fails (for `x-relaygate-degraded`)."""
    while isinstance(node, Group):
        node = node.children[0]
    return node


def leaves(node: Node) -> list[Leaf]:
    if isinstance(node, Leaf):
        return [node]
    out: list[Leaf] = []
    for child in node.children:
        out.extend(leaves(child))
    return out
