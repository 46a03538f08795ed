"""The state: which provider last accepted a message, and how each one has been doing.

One job per module: `protocol` (State, ProviderState, the changes as data, the StateStore
protocol), `location` (where the state lives: a path or a Redis URL), `tomlstore` (the
default store, a TOML file), `buffered` (BufferedStore, which folds a batch's updates into a
few writes), `workerstore` (WorkerStore, one `serve` worker's state: counters written behind)
and `redisstore` (the Redis store). The names of the first three are re-exported here; the
others are imported from their modules where used, so that a run that needs none of them
never loads them.
"""

from mailrelay.state.location import (
    STATE_ENV,
    STATE_URL_SCHEMES,
    default_state_path,
    is_state_url,
    state_path,
    state_url,
)
from mailrelay.state.protocol import (
    Changes,
    Observer,
    ProviderChange,
    ProviderState,
    State,
    StateDelta,
    StateStore,
    reset_delta,
)
from mailrelay.state.tomlstore import SCHEMA, TomlStateStore, render_state

__all__ = [
    "SCHEMA",
    "STATE_ENV",
    "STATE_URL_SCHEMES",
    "Changes",
    "Observer",
    "ProviderChange",
    "ProviderState",
    "State",
    "StateDelta",
    "StateStore",
    "TomlStateStore",
    "default_state_path",
    "is_state_url",
    "render_state",
    "reset_delta",
    "state_path",
    "state_url",
]
