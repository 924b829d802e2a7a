"""Bots that ship with mailbot: usable as they are, and examples of the Bot API."""
