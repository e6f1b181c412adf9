"""Broadcast backends: how a published message reaches every hub that shares a channel."""
