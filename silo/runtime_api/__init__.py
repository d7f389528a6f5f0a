"""The Runtime API server each environment talks to; paths and header names live only here."""

from silo.runtime_api.server import ChannelClosed, RuntimeChannel, RuntimeReply

__all__ = ["ChannelClosed", "RuntimeChannel", "RuntimeReply"]
