"""Reward shaping for training: inventory items worth a little reward while an agent holds them.

On the crafting missions the mission's own reward comes only at the end of a chain (extractor -> assembler ->
chest), and a policy that has not yet found the whole chain gets no signal for the first link. Shaping gives each
named item a weight w: the shaped reward at a step is the mission's plus w times the change in the agent's count
of that item, so picking one up earns w and spending it (at the assembler) pays w back. That is potential-based
shaping (Ng, Harada & Russell 1999, potential w x items held), which leaves the mission's optimal policies as they
are; with a discount gamma < 1 holding an item also earns (1 - gamma) x w per step, which at gamma 0.99 and
w 0.25 is 0.0025, too little to prefer hoarding over crafting. An agent cannot farm it: an item it never spends
pays w once per unit up to its inventory limit.

mettagrid computes it in C++: an inventory reward (`InventoryValue`) is paid as the change of the count at each
step, exactly the difference above. Only training environments are shaped; evaluation, sweeps' scores and the
training log's `episode_reward` are the mission's own reward (`mission_reward` takes the shaping back out of a
finished episode's return).
"""

from __future__ import annotations

from collections.abc import Mapping

from mettagrid.config.game_value import InventoryValue
from mettagrid.config.mettagrid_config import MettaGridConfig
from mettagrid.config.reward_config import reward

from daf.simulation import EpisodeOutcome


def _rewarded_items(config: MettaGridConfig) -> set[str]:
    """The inventory items a mission's reward counts (its goal)."""
    return {
        value.item
        for agent_reward in config.game.agent.rewards.values()
        for value in getattr(agent_reward.reward, "values", [agent_reward.reward])
        if isinstance(value, InventoryValue)
    }


def check_shaping(games: Mapping[str, MettaGridConfig], weights: Mapping[str, float]) -> None:
    """Each shaped item is an inventory item of at least one training mission (of `games`, mission -> game; in a
    mix, the missions without it are not shaped for it), and none of them rewards it already (shaping the goal
    would only rescale the reward): ValueError naming the item otherwise."""
    for item in weights:
        having = [mission for mission, game in games.items() if item in game.game.resource_names]
        if not having:
            items = sorted({i for game in games.values() for i in game.game.resource_names})
            raise ValueError(
                f"reward_shaping: no training mission has an inventory item {item!r} (their items: {items})"
            )
        for mission in having:
            if item in _rewarded_items(games[mission]):
                raise ValueError(
                    f"reward_shaping: {item!r} is what mission {mission!r} rewards already; shape the items that "
                    "lead to it"
                )


def shaped(config: MettaGridConfig, weights: Mapping[str, float]) -> MettaGridConfig:
    """A copy of `config` whose agents are also rewarded `weights[item]` per unit they hold of each item the mission
    has (paid as the count changes); `config` itself when it has none of them. Checked by check_shaping."""
    present = {item: w for item, w in weights.items() if item in config.game.resource_names}
    if not present:
        return config
    config = config.model_copy(deep=True)
    for item, weight in present.items():
        config.game.agent.rewards[f"shaping/{item}"] = reward(InventoryValue(item=item), weight=weight)
    return config


def mission_reward(outcome: EpisodeOutcome, weights: Mapping[str, float]) -> float:
    """The mission's own return of a finished shaped episode: its return less what shaping paid, which is each
    item's weight times its net change (gained - lost) over the episode, summed over agents."""
    stats = outcome.agent_stats  # means over the agents
    net = {item: stats.get(f"{item}.gained", 0.0) - stats.get(f"{item}.lost", 0.0) for item in weights}
    return outcome.total_reward - len(outcome.agent_rewards) * sum(w * net[item] for item, w in weights.items())
