"""Command palette provider: what the current screen can do, found by name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from loradeck.tui.keys import DEFAULTS


class ScreenActions(Provider):
    """Offers every loradeck binding active on the current screen (its keys shown as help)."""

    def _actions(self):
        seen = set()
        for key, active in self.screen.active_bindings.items():
            binding = active.binding
            if binding.id not in DEFAULTS or binding.id in seen or not active.enabled:
                continue
            seen.add(binding.id)
            keys = self.app.get_key_display(binding)
            yield binding.description, f"{keys}  ·  {binding.id}", \
                partial(self.app.run_action, binding.action, active.node)

    async def discover(self) -> Hits:
        for name, help_text, command in self._actions():
            yield DiscoveryHit(name, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, command in self._actions():
            score = max(matcher.match(name), matcher.match(help_text))
            if score > 0:
                yield Hit(score, matcher.highlight(name), command, text=name, help=help_text)
