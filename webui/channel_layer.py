"""channels_redis with send() in one round trip.

channels_redis 4.3 sends a message with four commands (ZREMRANGEBYSCORE, ZCOUNT, ZADD, EXPIRE),
each a round trip to Redis. Terminal keystrokes and output cross the layer once per message, so
those trips are most of a keystroke's echo latency. Here the same four steps run as one Lua
script: same keys, same semantics (expiry, capacity -> ChannelFull), one round trip.
"""

from __future__ import annotations

import time
from typing import Any

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer

SEND_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class GantryRedisChannelLayer(RedisChannelLayer):  # type: ignore[misc]
    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        channel_non_local_name = channel
        if "!" in channel:
            message = dict(message.items())
            message["__asgi_channel__"] = channel
            channel_non_local_name = self.non_local_name(channel)
        channel_key = self.prefix + channel_non_local_name
        if "!" in channel:
            index = self.consistent_hash(channel)
        else:
            index = next(self._send_index_generator)
        connection = self.connection(index)
        now = time.time()
        sent = await connection.eval(
            SEND_SCRIPT, 1, channel_key, int(now) - int(self.expiry),
            self.get_capacity(channel), now, self.serialize(message), int(self.expiry),
        )  # fmt: skip
        if not sent:
            raise ChannelFull()
